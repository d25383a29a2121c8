"""A network gradexp does not know, for `model=custom` in overhead.py: a pre-LN residual tower.

    gradexp model=custom model._target_=custom_model.ResidualTower +model.depth=8 init=default

(run from benchmarks/, or with it on PYTHONPATH). It is not an MLP as gradexp builds one: its
recorded weights sit inside residual blocks, next to LayerNorm parameters, so the recorder and the
diagnostics meet the layout a user's own model would have rather than gradexp's.
"""

import math

from torch import Tensor, nn


class Block(nn.Module):
    """x + fc2(gelu(fc1(layernorm(x)))): a Transformer's MLP block, normalized before it (pre-LN)
    so that the residual path carries the input through unchanged."""

    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.fc2(nn.functional.gelu(self.fc1(self.norm(x))))


class ResidualTower(nn.Module):
    """An input Linear, `depth` identical residual blocks, a final LayerNorm and a Linear head.
    `input_shape` (one example's shape) and `d_out` are what gradexp passes to a custom model."""

    def __init__(self, input_shape: tuple[int, ...], d_out: int, width: int = 256, depth: int = 8):
        super().__init__()
        self.input = nn.Linear(math.prod(input_shape), width)
        self.blocks = nn.ModuleList(Block(width) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, d_out)

    def forward(self, x: Tensor) -> Tensor:
        x = self.input(x.flatten(1))
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))
