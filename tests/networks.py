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


class WrongOutput(nn.Module):
    """Gives 3 outputs whatever the task needs."""

    def __init__(self, input_shape: tuple[int, ...]):
        super().__init__()
        self.linear = nn.Linear(input_shape[0], 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x)
