"""The mean-field prediction against an independent adaptive quadrature (QUADPACK, through
scipy), over the range of weight variances and biases a user can reach, for every activation;
and against the measurement where the old fixed-rule quadrature was wrong (tanh in the chaotic
phase)."""

import math

import pytest
import torch
from scipy import integrate

from gradexp.activations import ACTIVATIONS
from gradexp.config.schema import ActivationConfig
from gradexp.diagnostics.theory import derivative, gaussian_nodes, predict_chi1
from gradexp.engine import train
from tests.conftest import make_config

BOUNDED = ("tanh", "sigmoid", "softsign")  # their variance map has a finite fixed point for any sigma_w^2


def activation(name: str) -> torch.nn.Module:
    return ACTIVATIONS[name](ActivationConfig(name=name)).double()


def reference_expectation(f, mean: float, q: float) -> float:
    """E[f(h)], h ~ N(mean, q), by QUADPACK's adaptive Gauss-Kronrod rule, told only where the
    activations may bend (so that it looks closely there) and nothing of our panels."""
    sigma = math.sqrt(q)
    low, high = mean - 12 * sigma, mean + 12 * sigma
    points = sorted({p for p in (mean, 0.0, -1.0, 1.0, -5.0, 5.0, -20.0, 20.0) if low < p < high})

    def integrand(h: float) -> float:
        return f(h) * math.exp(-0.5 * ((h - mean) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))

    value, _ = integrate.quad(
        integrand, low, high, points=points or None, limit=500, epsabs=1e-15, epsrel=1e-11
    )
    return value


def scalar(module, derivative_of: bool):
    def f(h: float) -> float:
        x = torch.tensor([h], dtype=torch.float64)
        return float((derivative(module, x) if derivative_of else module(x).detach())[0] ** 2)

    return f


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_gaussian_expectations_match_adaptive_quadrature_for_every_activation(name):
    module = activation(name)
    for mean in (0.0, 0.4, -1.5):
        for q in (1e-4, 0.3, 1.0, 20.0, 128.0, 1e3, 1e5):
            h, w = gaussian_nodes(mean, q)
            with torch.no_grad():
                phi2 = float((w * module(h) ** 2).sum())
            dphi2 = float((w * derivative(module, h) ** 2).sum())
            for ours, f in ((phi2, scalar(module, False)), (dphi2, scalar(module, True))):
                expected = reference_expectation(f, mean, q)
                assert ours == pytest.approx(expected, rel=1e-7, abs=1e-14), (name, mean, q)


def reference_prediction(
    name: str, sigma_w2: float, bias_mean: float, sigma_b2: float
) -> tuple[float, float]:
    """(q*, chi_1) by iterating the variance map from q = 1 with the reference expectations."""
    module = activation(name)
    q = 1.0
    for _ in range(400):
        q_next = sigma_w2 * reference_expectation(scalar(module, False), bias_mean, q) + sigma_b2
        if q_next < 1e-30:  # shrinking to q* = 0: chi_1 is the limit from above
            return 0.0, sigma_w2 * reference_expectation(scalar(module, True), bias_mean, 1e-30)
        if abs(q_next - q) <= 1e-12 * q_next:
            q = q_next
            break
        q = q_next
    return q, sigma_w2 * reference_expectation(scalar(module, True), bias_mean, q)


CASES = [(name, sigma_w2) for name in BOUNDED for sigma_w2 in (0.1, 1.5, 10.0, 128.0, 1000.0)]
CASES += [("elu", 1.5), ("selu", 1.0), ("selu", 1.3)]  # unbounded, where a finite fixed point exists


@pytest.mark.parametrize("name, sigma_w2", CASES)
@pytest.mark.parametrize("bias_mean, sigma_b2", [(0.0, 0.0), (0.3, 0.05)])
def test_chi1_and_q_star_match_adaptive_quadrature_up_to_a_weight_variance_of_1000(
    name, sigma_w2, bias_mean, sigma_b2
):
    q_star, chi1 = reference_prediction(name, sigma_w2, bias_mean, sigma_b2)
    prediction = predict_chi1(activation(name), sigma_w2, bias_mean, sigma_b2)
    assert not prediction.forward_explodes
    assert prediction.q_star == pytest.approx(q_star, rel=1e-6)
    assert prediction.chi1 == pytest.approx(chi1, rel=1e-6)


@pytest.mark.parametrize("name", sorted(set(ACTIVATIONS) - set(BOUNDED)))
@pytest.mark.parametrize("gain", [0.1, 0.5])
def test_chi1_below_the_edge_is_the_slope_at_zero_for_unbounded_activations(name, gain):
    """Where the variance map's slope at q = 0, sigma_w^2 times the mean of the squared slopes
    on either side of 0 (rectifiers and SELU have a kink there), is below 1 and there is no
    bias, the variance shrinks to q* = 0 and chi_1 is that slope: the limit from above, not
    autograd's phi'(0)."""
    module = activation(name)
    right, left = (
        float(derivative(module, torch.tensor([x], dtype=torch.float64))[0]) for x in (1e-9, -1e-9)
    )
    sigma_w2 = gain / ((right**2 + left**2) / 2)
    prediction = predict_chi1(module, sigma_w2)
    assert prediction.q_star == 0.0 and prediction.chi1 == pytest.approx(gain, rel=1e-6)


def test_tanh_with_large_weights_predicts_the_measured_growth(tmp_path):
    """The case that was wrong: tanh with N(0, 1) weights at width 128 (sigma_w^2 = 128) is deep
    in the chaotic phase. The prediction (chi_1 about 6.2; the old fixed rule said 1.95) must
    agree with the per-layer factor measured from the back-propagated signal at step 0."""
    cfg = make_config(
        "activation=tanh",
        "init=normal",
        "init.std=1.0",
        "model.width=128",
        "model.depth=8",
        "trainer.steps=1",
    )
    summary = train(cfg, tmp_path / "run", show_progress=False)
    predicted, measured = summary["chi1_predicted"], summary["signal_factor_measured"]
    assert predicted == pytest.approx(6.24, rel=0.02)
    assert abs(math.log(predicted / measured)) < math.log(1.3), (predicted, measured)


def test_a_variance_without_fixed_point_says_how_fast_it_grows(tmp_path):
    """ReLU above He's variance has no fixed point: the variance grows by sigma_w^2 / 2 per layer.
    The note gives that rate rather than a q* (He's own init, measured at a sigma_w^2 just above
    2, grows by 1.00x per layer, which no six-layer network would call an explosion)."""
    prediction = predict_chi1(activation("relu"), 2.2)
    assert prediction.forward_explodes and prediction.forward_growth == pytest.approx(1.1, rel=1e-9)
    cfg = make_config("init=normal", "init.std=0.5", "model.width=16", "trainer.steps=1")  # sigma_w^2 near 4
    note = train(cfg, tmp_path / "run", show_progress=False)["theory_note"]
    assert (
        "no fixed point q*: the forward variance grows" in note
        and "x per layer" in note
        and "q* =" not in note
    )
