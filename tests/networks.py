"""Networks of a user's own, for `model=custom model._target_=networks.<name>` in the tests (the
tests directory is on sys.path under pytest, and on PYTHONPATH for the CLI's subprocesses)."""

import torch
from torch import Tensor, nn


class Block(nn.Module):
    """A pre-LN residual block: x + fc2(relu(fc1(norm(x))))."""

    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, 2 * width)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(2 * width, width)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.fc2(self.act(self.fc1(self.norm(x))))


class Everything(nn.Module):
    """Every case the layer model must get right, registered in another order than they run:

    - `frozen`: a linear map whose weight does not train (no layer);
    - `embed` and `head`: tied input and output embeddings (one layer);
    - `shared`: a module called twice (one layer with two outputs);
    - `blocks`: repeated residual blocks;
    - `scale`: a bare nn.Parameter, which counts in the total norm and is no layer.
    The input's features are bucketed into d_out tokens, so the embedding's vocabulary is the
    head's output."""

    def __init__(self, input_shape: tuple[int, ...], d_out: int, width: int = 16, depth: int = 2):
        super().__init__()
        self.head = nn.Linear(width, d_out, bias=False)
        self.shared = nn.Linear(width, width)
        self.squash = nn.Tanh()
        self.blocks = nn.ModuleList(Block(width) for _ in range(depth))
        self.embed = nn.Embedding(d_out, width)
        self.frozen = nn.Linear(input_shape[0], width)
        self.frozen.requires_grad_(False)
        self.head.weight = self.embed.weight
        self.scale = nn.Parameter(torch.ones(()))
        self.register_buffer("edges", torch.linspace(-1, 1, d_out - 1))

    def forward(self, x: Tensor) -> Tensor:
        tokens = torch.bucketize(x, self.edges)
        h = self.frozen(x) + self.embed(tokens).mean(dim=1)
        h = self.squash(self.shared(h))
        for block in self.blocks:
            h = block(h)
        h = self.shared(h) * self.scale
        return self.head(h)


def plain_stack(input_shape: tuple[int, ...], d_out: int, depth: int = 4, width: int = 32) -> nn.Module:
    """A factory, not a class: a plain tanh stack as nn.Sequential."""
    layers, d = [], input_shape[0]
    for _ in range(depth):
        layers += [nn.Linear(d, width), nn.Tanh()]
        d = width
    return nn.Sequential(*layers, nn.Linear(width, d_out))


def half_stack(input_shape: tuple[int, ...], d_out: int) -> nn.Module:
    """plain_stack with float16 parameters: it trains under fp16 autocast, without a loss scale."""
    return plain_stack(input_shape, d_out).half()


class HalfInside(nn.Module):
    """plain_stack in float16 behind a float32 interface: it trains at trainer.precision=32."""

    def __init__(self, input_shape: tuple[int, ...], d_out: int):
        super().__init__()
        self.net = plain_stack(input_shape, d_out).half()

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.half()).float()


class Gated(nn.Module):
    """A ReLU on one value per example (a gate): its activation is (batch,), one unit."""

    def __init__(self, input_shape: tuple[int, ...], d_out: int):
        super().__init__()
        features = int(torch.tensor(input_shape).prod())
        self.body = nn.Linear(features, d_out)
        self.gate = nn.Linear(features, 1)
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)
        return self.body(x) * (1 + self.act(self.gate(x).squeeze(1)))[:, None]


class WrongOutput(nn.Module):
    """Gives 3 outputs whatever the task needs."""

    def __init__(self, input_shape: tuple[int, ...]):
        super().__init__()
        self.linear = nn.Linear(input_shape[0], 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x)


class ConvBlock(nn.Module):
    """conv -> batchnorm -> in-place SiLU -> conv -> batchnorm, added to its input, then a PReLU
    with a slope per channel (learned: its sign can change)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.act = nn.SiLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.out = nn.PReLU(channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(x + self.bn2(self.conv2(self.act(self.bn1(self.conv1(x))))))


class ConvNet(nn.Module):
    """A small ResNet-style CNN over a blobs example read as a 4 x 8 image."""

    def __init__(self, input_shape: tuple[int, ...], d_out: int, channels: int = 8, depth: int = 2):
        super().__init__()
        self.stem = nn.Conv2d(1, channels, 3, padding=1)
        self.stem_act = nn.ReLU(inplace=True)
        self.stages = nn.Sequential(*(ConvBlock(channels) for _ in range(depth)))
        self.head = nn.Linear(channels, d_out)

    def forward(self, x: Tensor) -> Tensor:
        h = self.stem_act(self.stem(x.view(-1, 1, 4, 8)))
        return self.head(self.stages(h).mean(dim=(2, 3)))


class AttentionBlock(nn.Module):
    """Pre-LN Transformer block with nn.MultiheadAttention, whose out_proj's forward never runs
    (its weight is passed to a function)."""

    def __init__(self, width: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, 2, batch_first=True)
        self.norm2 = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, 2 * width)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(2 * width, width)

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))


class TinyTransformer(nn.Module):
    """A blobs example read as 8 tokens of 4 features."""

    def __init__(self, input_shape: tuple[int, ...], d_out: int, width: int = 16, depth: int = 2):
        super().__init__()
        self.embed = nn.Linear(4, width)
        self.blocks = nn.ModuleList(AttentionBlock(width) for _ in range(depth))
        self.head = nn.Linear(width, d_out)

    def forward(self, x: Tensor) -> Tensor:
        h = self.embed(x.view(x.shape[0], 8, 4))
        for block in self.blocks:
            h = block(h)
        return self.head(h.mean(dim=1))
