"""Normalization registry: `norm=<name>` picks the layer placed between each hidden linear map
and its activation. Normalizing the pre-activation keeps it in the activation's responsive
range whatever the weights' scale, which is why it rescues deep saturating networks."""

from collections.abc import Callable

from torch import nn


def none(width: int) -> nn.Module:
    """No normalization: the pre-activation's scale is whatever the weights make it."""
    return nn.Identity()


def batchnorm(width: int) -> nn.Module:
    """Standardize each unit over the batch (Ioffe & Szegedy 2015). Training statistics come
    from the batch, evaluation uses running averages."""
    return nn.BatchNorm1d(width)


def layernorm(width: int) -> nn.Module:
    """Standardize each example over its units (Ba et al. 2016). Independent of batch size."""
    return nn.LayerNorm(width)


NORMS: dict[str, Callable[[int], nn.Module]] = {f.__name__: f for f in (none, batchnorm, layernorm)}


def norm_2d(name: str, channels: int) -> nn.Module:
    """The same choice for a convolution's (batch, channels, height, width) output: batchnorm
    standardizes each channel over the batch and the positions (BatchNorm2d); layernorm
    standardizes each example over all its channels and positions (GroupNorm with one group, a
    LayerNorm over C x H x W with a scale and shift per channel)."""
    if name == "batchnorm":
        return nn.BatchNorm2d(channels)
    if name == "layernorm":
        return nn.GroupNorm(1, channels)
    return nn.Identity()
