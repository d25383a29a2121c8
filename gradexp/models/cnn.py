"""The CNN: a stem convolution, then `depth` 3x3 convolutions in blocks of two, in three stages
whose first blocks halve the image (stride 2), then global average pooling and a linear head.
With `residual`, every block adds its input back (a ResNet's basic block with identity skips,
He et al. 2016); without, the same network is a plain deep CNN, whose gradient vanishes on
its way to the first layers."""

import math
from dataclasses import dataclass

from torch import Tensor, nn

from gradexp.activations import ACTIVATIONS
from gradexp.config.checks import at_least, require
from gradexp.models.spec import ModelSpec, Size, register
from gradexp.norms import norm_2d
from gradexp.tasks import IMAGES

STAGES = 3  # the image is halved at the start of the second and the third


@dataclass
class CNNConfig:
    name: str = "cnn"
    depth: int = 8  # 3x3 convolutions after the stem, in blocks of two
    channels: int = 16  # of every convolution
    residual: bool = False  # an identity skip around every block


class Block(nn.Module):
    """conv -> norm -> activation -> conv -> norm, (+ the input), -> activation. A block that
    halves the image does it in its first convolution, and its skip takes every other pixel
    (a parameter-free shortcut, as in He et al.'s CIFAR ResNets)."""

    def __init__(self, channels: int, stride: int, residual: bool, cfg):
        super().__init__()
        self.stride, self.residual = stride, residual
        self.conv1 = nn.Conv2d(channels, channels, 3, stride=stride, padding=1)
        self.norm1 = norm_2d(cfg.norm.name, channels)
        self.act1 = ACTIVATIONS[cfg.activation.name](cfg.activation)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2 = norm_2d(cfg.norm.name, channels)
        self.act2 = ACTIVATIONS[cfg.activation.name](cfg.activation)

    def forward(self, x: Tensor) -> Tensor:
        out = self.norm2(self.conv2(self.act1(self.norm1(self.conv1(x)))))
        if self.residual:
            out = out + x[:, :, :: self.stride, :: self.stride]
        return self.act2(out)


class CNN(nn.Module):
    def __init__(self, input_shape: tuple[int, ...], d_out: int, cfg):
        super().__init__()
        m: CNNConfig = cfg.model
        self.stem = nn.Sequential(
            nn.Conv2d(input_shape[0], m.channels, 3, padding=1),
            norm_2d(cfg.norm.name, m.channels),
            ACTIVATIONS[cfg.activation.name](cfg.activation),
        )
        self.blocks = nn.Sequential(
            *(Block(m.channels, stride, m.residual, cfg) for stride in block_strides(m.depth // 2))
        )
        self.head = nn.Linear(m.channels, d_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.blocks(self.stem(x)).mean(dim=(2, 3)))


def block_strides(blocks: int) -> list[int]:
    """1 for every block but the first of the second and the third stage, 2 there; the blocks are
    shared out as evenly as they go, the earlier stages taking the remainder."""
    sizes = [blocks // STAGES + (1 if s < blocks % STAGES else 0) for s in range(STAGES)]
    strides = []
    for stage, size in enumerate(sizes):
        strides += [2 if stage > 0 and k == 0 else 1 for k in range(size)]
    return strides


def _check(c) -> None:
    at_least(c, "model", "depth", 2)
    require(
        c.model.depth % 2 == 0,
        "model.depth",
        c.model.depth,
        "an even integer >= 2 (the convolutions come in blocks of two)",
    )
    at_least(c, "model", "channels", 1)


def _size(c, input_shape: tuple[int, ...], outputs: int) -> Size:
    m = c.model
    conv = (9 * m.channels + 1) * m.channels
    parameters = (9 * input_shape[0] + 1) * m.channels + m.depth * conv + 4 * m.channels * (m.depth + 1)
    pixels, units = input_shape[1] * input_shape[2], 3 * m.channels * input_shape[1] * input_shape[2]
    for stride in block_strides(m.depth // 2):
        if stride == 2:
            pixels = math.ceil(math.sqrt(pixels) / 2) ** 2
        units += 2 * 3 * m.channels * pixels  # conv, norm and activation outputs, twice a block
    return Size(parameters + (m.channels + 1) * outputs, units, ("depth", "channels"))


def _describe(model, activation, norm) -> str:
    kind = "resnet" if model.residual else "plain cnn"
    return f"{kind} {model.depth}x{model.channels}ch {activation.name} norm={norm.name}"


register(
    ModelSpec(
        name="cnn",
        config=CNNConfig,
        build=lambda c, task: CNN(task.input_shape, task.d_out, c),
        describe=_describe,
        check=_check,
        size=_size,
        groups=("activation", "norm"),
        no_theory="it describes gradexp's plain MLP; read the measured signals",
        tasks=IMAGES,
    )
)
