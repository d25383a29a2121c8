"""Initializer registry: `init=<name>` sets every weight matrix; `init.bias` sets every bias.

The weights' variance decides whether the signal keeps its size from layer to layer. For a
layer y = W x with fan_in inputs, Var(y) = fan_in * Var(W) * E[x^2] forward, and the gradient
scales by fan_out * Var(W) backward: a variance off by a factor k per layer becomes k^depth.
The RNN's recurrent matrix W_hh can be set apart (`model.recurrent_init`), since its powers,
not its variance, decide whether gradients survive through time.
"""

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from gradexp.config.schema import InitConfig


def default(w: Tensor, cfg: InitConfig) -> None:
    """Keep PyTorch's own initialization: for nn.Linear, U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
    i.e. Var(W) = 1 / (3 fan_in), a third of what keeps a linear network's signal flat."""


def constant(w: Tensor, cfg: InitConfig) -> None:
    """W = value everywhere. All units of a layer compute the same thing and receive the same
    gradient, so they never become different (the symmetry problem)."""
    nn.init.constant_(w, cfg.value)


def normal(w: Tensor, cfg: InitConfig) -> None:
    """W ~ N(mean, std^2), ignoring the fan-in: the signal scales by about sqrt(fan_in) * std per
    layer, so a fixed std vanishes or explodes at depth.

        gradexp init=normal init.std=1.0 model.depth=20   # explodes
    """
    nn.init.normal_(w, cfg.mean, cfg.std)


def uniform(w: Tensor, cfg: InitConfig) -> None:
    """W ~ U(low, high), ignoring the fan-in: Var(W) = (high - low)^2 / 12."""
    nn.init.uniform_(w, cfg.low, cfg.high)


def xavier_uniform(w: Tensor, cfg: InitConfig) -> None:
    """W ~ U(-a, a), a = gain * sqrt(6 / (fan_in + fan_out)), so Var(W) = gain^2 * 2 /
    (fan_in + fan_out): the compromise between preserving the forward and the backward variance
    for activations that are linear around 0 (Glorot & Bengio 2010)."""
    nn.init.xavier_uniform_(w, cfg.gain)


def xavier_normal(w: Tensor, cfg: InitConfig) -> None:
    """W ~ N(0, gain^2 * 2 / (fan_in + fan_out)) (Glorot & Bengio 2010)."""
    nn.init.xavier_normal_(w, cfg.gain)


def kaiming_uniform(w: Tensor, cfg: InitConfig) -> None:
    """W ~ U(-b, b), b = gain * sqrt(3 / fan), so Var(W) = gain^2 / fan with gain^2 = 2 for
    ReLU: doubles Xavier's variance to make up for ReLU zeroing half its inputs (He et al. 2015)."""
    nn.init.kaiming_uniform_(w, a=cfg.a, mode=cfg.mode, nonlinearity=cfg.nonlinearity)


def kaiming_normal(w: Tensor, cfg: InitConfig) -> None:
    """W ~ N(0, gain^2 / fan), gain^2 = 2 for ReLU: keeps a deep ReLU network's signal flat
    (He et al. 2015)."""
    nn.init.kaiming_normal_(w, a=cfg.a, mode=cfg.mode, nonlinearity=cfg.nonlinearity)


def orthogonal(w: Tensor, cfg: InitConfig) -> None:
    """W = gain * Q with Q a random (semi-)orthogonal matrix: every singular value is gain, so a
    deep linear network neither shrinks nor grows any direction (Saxe et al. 2014)."""
    nn.init.orthogonal_(w, cfg.gain)


INITIALIZERS: dict[str, Callable[[Tensor, InitConfig], None]] = {
    f.__name__: f
    for f in (
        default,
        constant,
        normal,
        uniform,
        xavier_uniform,
        xavier_normal,
        kaiming_uniform,
        kaiming_normal,
        orthogonal,
    )
}

KAIMING_MODES = ("fan_in", "fan_out")
KAIMING_NONLINEARITIES = ("relu", "leaky_relu", "tanh", "sigmoid", "linear", "selu")


# Recurrent initializers: `model.recurrent_init=<name>` sets each H x H block of W_hh (an LSTM
# stacks 4 such blocks, a GRU 3) with spectral scale `gain`.


def recurrent_orthogonal(block: Tensor, gain: float) -> None:
    """gain * Q, Q orthogonal: every eigenvalue has modulus gain, so the linearized gradient
    through T steps scales as gain^T exactly (Saxe et al. 2014)."""
    nn.init.orthogonal_(block, gain)


def recurrent_identity(block: Tensor, gain: float) -> None:
    """gain * I, the IRNN of Le et al. (2015): with ReLU cells and gain 1 the hidden state is
    carried forward unchanged, and so is the gradient."""
    with torch.no_grad():
        block.copy_(gain * torch.eye(block.shape[0], block.shape[1]))


def recurrent_normal(block: Tensor, gain: float) -> None:
    """N(0, gain^2 / H): by the circular law the spectral radius is close to gain for large H,
    so gain < 1 makes gradients vanish through time and gain > 1 explode (Pascanu et al. 2013)."""
    nn.init.normal_(block, 0.0, gain / math.sqrt(block.shape[1]))


RECURRENT_INITIALIZERS: dict[str, Callable[[Tensor, float], None]] = {
    "orthogonal": recurrent_orthogonal,
    "identity": recurrent_identity,
    "normal": recurrent_normal,
}


def initialize(weights: list[Tensor], biases: list[Tensor], cfg: InitConfig) -> None:
    """Apply the configured initializer to every weight matrix and `cfg.bias` to every bias."""
    with torch.no_grad():
        for w in weights:
            INITIALIZERS[cfg.name](w, cfg)
        if cfg.bias is not None:
            for b in biases:
                b.fill_(cfg.bias)


def initialize_recurrent(w_hh: Tensor, name: str, gain: float) -> None:
    """Set each H x H gate block of a recurrent weight matrix with the named initializer."""
    hidden = w_hh.shape[1]
    with torch.no_grad():
        for block in w_hh.split(hidden, dim=0):
            RECURRENT_INITIALIZERS[name](block, gain)
