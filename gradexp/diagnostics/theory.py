"""Mean-field theory of signal propagation (Poole et al. 2016; Schoenholz et al. 2017).

In a wide MLP with i.i.d. zero-mean weights of variance sigma_w^2 / fan_in and biases of mean
b and variance sigma_b^2, a pre-activation h is Gaussian with variance q, which settles at the
fixed point q* of

    q = sigma_w^2 E[phi(h)^2] + sigma_b^2,        h ~ N(b, q).

Back-propagated, the squared signal is multiplied per layer by

    chi_1 = sigma_w^2 E[phi'(h)^2],               h ~ N(b, q*),

so it vanishes (chi_1 < 1) or explodes (chi_1 > 1) over a depth scale of 1 / |ln chi_1| layers.
The expectations are computed on the activation module itself, so every activation in the
registry works, by composite Gauss-Legendre quadrature over h (see `gaussian_nodes`): a fixed
Gauss-Hermite rule in the standardized variable cannot resolve phi'(h)^2 once q is large, where
all of tanh's derivative lies within a sliver of width ~1/sqrt(q) around 0 (with
sigma_w^2 = 128 it gave chi_1 = 1.95 where the truth, and the measurement, is about 6).
"""

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

PANEL_NODES = 16  # Gauss-Legendre nodes per panel
TAIL_SIGMAS = 10  # the Gaussian beyond 10 standard deviations holds 1.5e-23 of its mass
ACTIVATION_CORE = 20  # |h| below this gets unit-width panels: where activations bend
Q_OVERFLOW = 1e12  # a variance beyond this has no fixed point: the forward signal explodes
Q_FLOOR = 1e-30  # a variance that shrinks below this has q* = 0


@dataclass
class Prediction:
    chi1: float
    q_star: float
    depth_scale: float | None  # layers over which the squared signal changes by a factor e
    forward_explodes: bool  # the variance map has no finite fixed point
    forward_growth: float | None = None  # then: the factor by which the variance grows per layer


def derivative(activation: nn.Module, h: Tensor) -> Tensor:
    """phi'(h) element-wise, by autograd, for any point-wise activation module. Calls forward
    directly: the diagnostics call this from a hook on the same module, which must not re-fire."""
    with torch.enable_grad():
        h = h.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(activation.forward(h).sum(), h)
    return grad


GRID = (-20.0, 20.0, 40001)  # where the activations' shapes are read: phi' is flat beyond


def max_derivative(activation: nn.Module) -> float:
    """The largest phi' over a wide grid: what 'saturated' is measured against."""
    return derivative(activation, torch.linspace(*GRID, dtype=torch.float64)).max().item()


def where_below(activation: nn.Module, threshold: float) -> tuple[tuple[float, float], ...]:
    """The inputs h where phi'(h) < threshold, as intervals (low, high), found once so that a
    diagnostic step counts saturated units with comparisons instead of taking phi' by autograd
    (for GELU on a Transformer's activations, 40 ms a step against a few). The grid finds the
    intervals; bisection in float64 puts each edge where phi' crosses the threshold. An interval
    reaching the grid's end goes on to infinity (phi' of every activation is monotone there)."""
    h = torch.linspace(*GRID, dtype=torch.float64)
    below = (derivative(activation, h) < threshold).tolist()
    edges = [
        _crossing(activation, threshold, h[i].item(), h[i + 1].item())
        for i in range(len(h) - 1)
        if below[i] != below[i + 1]
    ]
    bounds = ([-math.inf] if below[0] else []) + edges + ([math.inf] if below[-1] else [])
    return tuple(zip(bounds[::2], bounds[1::2]))


def _crossing(activation: nn.Module, threshold: float, low: float, high: float) -> float:
    """Where phi' - threshold changes sign between low and high, to float64 precision."""
    below_at_low = derivative(activation, torch.tensor([low], dtype=torch.float64)).item() < threshold
    for _ in range(60):
        middle = (low + high) / 2
        if (
            derivative(activation, torch.tensor([middle], dtype=torch.float64)).item() < threshold
        ) == below_at_low:
            low = middle
        else:
            high = middle
    return high


@functools.cache
def _legendre() -> tuple[np.ndarray, np.ndarray]:
    return np.polynomial.legendre.leggauss(PANEL_NODES)


def gaussian_nodes(mean: float, q: float) -> tuple[Tensor, Tensor]:
    """Nodes h and weights w with sum(w * f(h)) ~ E[f(h)] for h ~ N(mean, q), accurate for the
    activations' f = phi^2 and phi'^2 whatever q is. The panels cut the integral wherever the
    integrand can bend: every standard deviation of the Gaussian, every unit of h where the
    activations change (|h| < 20, with kinks at 0), and doubling widths beyond, where some
    (softsign) still change slowly. On each panel the integrand is smooth, so 16 nodes give
    float64 precision."""
    sigma = math.sqrt(q)
    low, high = mean - TAIL_SIGMAS * sigma, mean + TAIL_SIGMAS * sigma
    edges = [low, high, 0.0, *(mean + k * sigma for k in range(1 - TAIL_SIGMAS, TAIL_SIGMAS))]
    edges += range(-ACTIVATION_CORE, ACTIVATION_CORE + 1)
    reach, far = ACTIVATION_CORE * 2.0, max(abs(low), abs(high))
    while reach < far:
        edges += [-reach, reach]
        reach *= 2
    edges = np.unique(np.clip(np.asarray(edges, dtype=np.float64), low, high))
    if len(edges) < 2:  # sigma is below float64's resolution at the mean: a point mass
        return torch.tensor([float(mean)], dtype=torch.float64), torch.ones(1, dtype=torch.float64)
    x, w = _legendre()
    half, middle = np.diff(edges)[:, None] / 2, (edges[:-1] + edges[1:])[:, None] / 2
    h = (middle + half * x).ravel()
    density = np.exp(-0.5 * ((h - mean) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
    return torch.from_numpy(h), torch.from_numpy((half * w).ravel() * density)


def predict_chi1(
    activation: nn.Module, sigma_w2: float, bias_mean: float = 0.0, sigma_b2: float = 0.0
) -> Prediction:
    """chi_1 and the fixed-point variance q* for the given weight and bias statistics."""
    activation = activation.double()

    def chi_at(q: float) -> float:
        h, w = gaussian_nodes(bias_mean, q)
        return sigma_w2 * float((w * derivative(activation, h) ** 2).sum())

    def variance_map(q: float) -> float:
        h, w = gaussian_nodes(bias_mean, q)
        with torch.no_grad():
            return sigma_w2 * float((w * activation(h) ** 2).sum()) + sigma_b2

    q, explodes = fixed_point(variance_map)
    chi1 = chi_at(max(q, Q_FLOOR))  # at q* = 0, the limit from above (ReLU's kink sits at 0)
    scale = 1 / abs(math.log(chi1)) if chi1 > 0 and abs(math.log(chi1)) > 1e-12 else None  # None: critical
    growth = variance_map(q) / q if explodes else None  # the map's slope far out: ReLU's is sigma_w^2 / 2
    return Prediction(chi1, q, scale, explodes, growth)


def fixed_point(variance_map: Callable[[float], float]) -> tuple[float, bool]:
    """The fixed point q* = variance_map(q*) that iterating the map from q = 1 settles at, and
    whether the variance grows without bound instead. Rather than iterate (which crawls, as
    1/n, where the map is tangent to the identity: tanh at sigma_w^2 = 1), bracket a change of
    sign of variance_map(q) - q by doubling or halving q from 1, then bisect it: about 50
    evaluations whatever the case. No sign change down to Q_FLOOR means q* = 0."""

    def gap(q: float) -> float:
        return variance_map(q) - q

    at_one = gap(1.0)
    if abs(at_one) <= 1e-12:
        return 1.0, False
    grows = at_one > 0
    low = 1.0
    while True:
        high = low * (2.0 if grows else 0.5)
        found = gap(high)
        if grows and (not math.isfinite(found) or high > Q_OVERFLOW):
            return high, True
        if not grows and high < Q_FLOOR:
            return 0.0, False
        if found == 0 or (found > 0) != grows:
            break
        low = high
    while abs(high - low) > 1e-13 * max(low, high):  # gap(low) has at_one's sign, gap(high) not
        middle = (low + high) / 2
        if (gap(middle) > 0) == grows:
            low = middle
        else:
            high = middle
    return (low + high) / 2, False


def measured_factor(signal_norms: list[float]) -> float | None:
    """The per-layer factor of the squared back-propagated signal, from the norms of
    dL/d(pre-activation) of consecutive hidden layers (input to output): exp of minus the slope
    of a least-squares line through log ||delta_l||^2, so < 1 means shrinking towards the input.
    Layers whose signal underflowed to 0 are left out of the fit (see `signal_verdict`)."""
    points = [(i, 2 * math.log(v)) for i, v in enumerate(signal_norms) if v > 0 and math.isfinite(v)]
    if len(points) < 2:
        return None
    n = len(points)
    mean_l, mean_y = sum(i for i, _ in points) / n, sum(y for _, y in points) / n
    slope = sum((i - mean_l) * (y - mean_y) for i, y in points) / sum((i - mean_l) ** 2 for i, _ in points)
    return math.exp(-slope)


def signal_verdict(signal_norms: list[float], factor: float | None, layers: int) -> str | None:
    """The measured verdict: a signal that underflowed to 0 below a non-zero one has vanished,
    whatever the fit through the rest says."""
    if any(v == 0 for v in signal_norms) and any(v > 0 for v in signal_norms):
        return "vanishing"
    return verdict(factor, layers)


def verdict(factor_per_layer: float | None, layers: int) -> str | None:
    """vanishing or exploding when the squared signal changes by more than 100x (the gradient by
    10x) across the network, stable otherwise."""
    if factor_per_layer is None:
        return None
    total_log = layers * math.log(factor_per_layer) if factor_per_layer > 0 else -math.inf
    if total_log < -math.log(100):
        return "vanishing"
    if total_log > math.log(100):
        return "exploding"
    return "stable"


def no_prediction(reason: str) -> dict:
    """The prediction's summary keys where the theory does not apply, and why not."""
    return {
        "chi1_predicted": None,
        "depth_scale_predicted": None,
        "verdict_predicted": None,
        "theory_note": f"mean-field theory does not apply: {reason}",
    }
