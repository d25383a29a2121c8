"""Activation registry: `activation=<name>` picks one function here.

Each docstring says what the activation's derivative does to the back-propagated signal, which
is multiplied by phi'(h) once per layer: a derivative that is small or zero over much of the
input range shrinks the gradient geometrically with depth.
"""

from collections.abc import Callable

from torch import nn

from gradexp.config.schema import ActivationConfig
from gradexp.network import ACTIVATION_FAMILIES

ACTIVATIONS: dict[str, Callable[[ActivationConfig], nn.Module]] = {}


def register(family: str | None):
    """Add the decorated activation to the registry under its function's name (one line), and
    its module class to what the diagnostics watch for (`network.ACTIVATION_FAMILIES`):
    "saturating" units whose derivative has collapsed (sigmoid, tanh and softsign at both ends;
    ELU, SELU and GELU on their negative side), "rectifier" units that are dead (negative input
    for a whole batch, so no gradient, or only the leak), or None: neither."""

    def add(build: Callable[[ActivationConfig], nn.Module]):
        ACTIVATIONS[build.__name__] = build
        if family is not None:  # a class the diagnostics watch wherever it runs, in any network
            ACTIVATION_FAMILIES.setdefault(type(build(ActivationConfig(name=build.__name__))), family)
        return build

    return add


@register("saturating")
def sigmoid(cfg: ActivationConfig) -> nn.Module:
    """1 / (1 + e^-x). phi' <= 1/4, reached at 0 and decaying fast: each layer divides the
    signal by at least 4, so deep sigmoid networks vanish (Glorot & Bengio 2010)."""
    return nn.Sigmoid()


@register("saturating")
def tanh(cfg: ActivationConfig) -> nn.Module:
    """tanh(x). phi'(0) = 1 but phi' -> 0 once |x| > 2: saturated units block the gradient."""
    return nn.Tanh()


@register("rectifier")
def relu(cfg: ActivationConfig) -> nn.Module:
    """max(0, x). phi' is 1 or 0: no shrinking where active, but units that never activate are
    dead and pass no gradient. Pairs with He initialization (He et al. 2015)."""
    return nn.ReLU()


@register("rectifier")
def leaky_relu(cfg: ActivationConfig) -> nn.Module:
    """x for x > 0, negative_slope * x otherwise (Maas et al. 2013). phi' >= negative_slope,
    so no unit is ever fully dead."""
    return nn.LeakyReLU(cfg.negative_slope)


@register("saturating")
def elu(cfg: ActivationConfig) -> nn.Module:
    """x for x > 0, alpha * (e^x - 1) otherwise (Clevert et al. 2016). Smooth, non-saturating
    for x > 0, with negative outputs that pull mean activations towards zero."""
    return nn.ELU(cfg.alpha)


@register("saturating")
def gelu(cfg: ActivationConfig) -> nn.Module:
    """x * Phi(x) (Hendrycks & Gimpel 2016). A smooth ReLU whose derivative is never exactly 0."""
    return nn.GELU()


@register("saturating")
def selu(cfg: ActivationConfig) -> nn.Module:
    """Scaled ELU (Klambauer et al. 2017). With N(0, 1/fan_in) weights it self-normalizes:
    activations are pulled to zero mean and unit variance, keeping gradients bounded."""
    return nn.SELU()


@register("saturating")
def softsign(cfg: ActivationConfig) -> nn.Module:
    """x / (1 + |x|). Saturates polynomially rather than exponentially, so it blocks the
    gradient more gently than tanh (Glorot & Bengio 2010)."""
    return nn.Softsign()


@register(None)
def identity(cfg: ActivationConfig) -> nn.Module:
    """x. A deep linear network: phi' = 1, so the gradient's fate rests on the weights alone
    (Saxe et al. 2014)."""
    return nn.Identity()
