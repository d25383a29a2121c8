"""Activation registry: `activation=<name>` picks one function here.

Each docstring says what the activation's derivative does to the back-propagated signal, which
is multiplied by phi'(h) once per layer: a derivative that is small or zero over much of the
input range shrinks the gradient geometrically with depth.
"""

from collections.abc import Callable

from torch import nn

from gradexp.config.schema import ActivationConfig


def sigmoid(cfg: ActivationConfig) -> nn.Module:
    """1 / (1 + e^-x). phi' <= 1/4, reached at 0 and decaying fast: each layer divides the
    signal by at least 4, so deep sigmoid networks vanish (Glorot & Bengio 2010)."""
    return nn.Sigmoid()


def tanh(cfg: ActivationConfig) -> nn.Module:
    """tanh(x). phi'(0) = 1 but phi' -> 0 once |x| > 2: saturated units block the gradient."""
    return nn.Tanh()


def relu(cfg: ActivationConfig) -> nn.Module:
    """max(0, x). phi' is 1 or 0: no shrinking where active, but units that never activate are
    dead and pass no gradient. Pairs with He initialization (He et al. 2015)."""
    return nn.ReLU()


def leaky_relu(cfg: ActivationConfig) -> nn.Module:
    """x for x > 0, negative_slope * x otherwise (Maas et al. 2013). phi' >= negative_slope,
    so no unit is ever fully dead."""
    return nn.LeakyReLU(cfg.negative_slope)


def elu(cfg: ActivationConfig) -> nn.Module:
    """x for x > 0, alpha * (e^x - 1) otherwise (Clevert et al. 2016). Smooth, non-saturating
    for x > 0, with negative outputs that pull mean activations towards zero."""
    return nn.ELU(cfg.alpha)


def gelu(cfg: ActivationConfig) -> nn.Module:
    """x * Phi(x) (Hendrycks & Gimpel 2016). A smooth ReLU whose derivative is never exactly 0."""
    return nn.GELU()


def selu(cfg: ActivationConfig) -> nn.Module:
    """Scaled ELU (Klambauer et al. 2017). With N(0, 1/fan_in) weights it self-normalizes:
    activations are pulled to zero mean and unit variance, keeping gradients bounded."""
    return nn.SELU()


def softsign(cfg: ActivationConfig) -> nn.Module:
    """x / (1 + |x|). Saturates polynomially rather than exponentially, so it blocks the
    gradient more gently than tanh (Glorot & Bengio 2010)."""
    return nn.Softsign()


def identity(cfg: ActivationConfig) -> nn.Module:
    """x. A deep linear network: phi' = 1, so the gradient's fate rests on the weights alone
    (Saxe et al. 2014)."""
    return nn.Identity()


ACTIVATIONS: dict[str, Callable[[ActivationConfig], nn.Module]] = {
    f.__name__: f for f in (sigmoid, tanh, relu, leaky_relu, elu, gelu, selu, softsign, identity)
}
