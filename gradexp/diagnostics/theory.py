"""Mean-field theory of signal propagation (Poole et al. 2016; Schoenholz et al. 2017).

In a wide MLP with i.i.d. zero-mean weights of variance sigma_w^2 / fan_in and biases of mean
b and variance sigma_b^2, a pre-activation h is Gaussian with variance q, which settles at the
fixed point q* of

    q = sigma_w^2 E[phi(h)^2] + sigma_b^2,        h ~ N(b, q).

Back-propagated, the squared signal is multiplied per layer by

    chi_1 = sigma_w^2 E[phi'(h)^2],               h ~ N(b, q*),

so it vanishes (chi_1 < 1) or explodes (chi_1 > 1) over a depth scale of 1 / |ln chi_1| layers.
The expectations are computed by Gauss-Hermite quadrature on the activation module itself, so
every activation in the registry works.
"""

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

QUADRATURE_POINTS = 200  # even, so no node sits on a ReLU-type kink at 0 (autograd says phi'(0) = 0)
MAX_ITERATIONS = 5000
Q_OVERFLOW = 1e12  # a variance beyond this has no fixed point: the forward signal explodes


@dataclass
class Prediction:
    chi1: float
    q_star: float
    depth_scale: float | None  # layers over which the squared signal changes by a factor e
    forward_explodes: bool  # the variance map has no finite fixed point


def derivative(activation: nn.Module, h: Tensor) -> Tensor:
    """phi'(h) element-wise, by autograd, for any point-wise activation module. Calls forward
    directly: the diagnostics call this from a hook on the same module, which must not re-fire."""
    with torch.enable_grad():
        h = h.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(activation.forward(h).sum(), h)
    return grad


def max_derivative(activation: nn.Module) -> float:
    """The largest phi' over a wide grid: what 'saturated' is measured against."""
    return derivative(activation, torch.linspace(-20, 20, 40001, dtype=torch.float64)).max().item()


@functools.cache
def _standard_normal_quadrature() -> tuple[Tensor, Tensor]:
    """Nodes and weights with sum(w * f(z)) ~ E[f(z)] for z ~ N(0, 1); the same for every run,
    and computing them is half the cost of a prediction."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(QUADRATURE_POINTS)
    return torch.tensor(nodes), torch.tensor(weights / math.sqrt(2 * math.pi))


def predict_chi1(
    activation: nn.Module, sigma_w2: float, bias_mean: float = 0.0, sigma_b2: float = 0.0
) -> Prediction:
    """chi_1 and the fixed-point variance q* for the given weight and bias statistics."""
    z, w = _standard_normal_quadrature()
    activation = activation.double()

    def expect(values: Tensor) -> float:
        return float((w * values).sum())

    def chi_at(q: float) -> float:
        return sigma_w2 * expect(derivative(activation, bias_mean + math.sqrt(q) * z) ** 2)

    q, explodes, chi_before = 1.0, False, None
    for i in range(MAX_ITERATIONS):
        q_next = sigma_w2 * expect(activation(bias_mean + math.sqrt(q) * z) ** 2) + sigma_b2
        if not math.isfinite(q_next) or q_next > Q_OVERFLOW:
            explodes = True
            break
        converged = abs(q_next - q) <= 1e-12 * max(1.0, q)
        q = q_next
        if converged:
            break
        if i % 100 == 99:  # q can drift for ever where chi_1 no longer moves (ReLU at sigma_w^2 = 2)
            chi_now = chi_at(q)
            if chi_before is not None and abs(chi_now - chi_before) <= 1e-10:
                break
            chi_before = chi_now
    chi1 = chi_at(q)
    scale = 1 / abs(math.log(chi1)) if chi1 > 0 and chi1 != 1 else None
    return Prediction(chi1, q, scale, explodes)


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
