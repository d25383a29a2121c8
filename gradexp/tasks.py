"""Synthetic tasks, generated from the seed and never downloaded, each with a held-out split.

The data is small enough to live on the training device, so a batch is one index into a tensor
and the input pipeline costs nothing next to the gradients being studied.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from gradexp.config.schema import TaskConfig


@dataclass
class Task:
    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    d_out: int
    classification: bool  # cross-entropy and accuracy; otherwise mean squared error

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def to(self, device: torch.device) -> "Task":
        moved = {k: getattr(self, k).to(device) for k in ("x_train", "y_train", "x_val", "y_val")}
        return Task(**moved, d_out=self.d_out, classification=self.classification)


def blobs(cfg: TaskConfig, g: torch.Generator) -> Task:
    """A Gaussian mixture: class k is N(c_k, I) with centres c_k ~ N(0, separation^2 / d_in),
    so centres lie about `separation` standard deviations apart. Classes are balanced."""
    centres = torch.randn(cfg.n_classes, cfg.d_in, generator=g) * cfg.separation / math.sqrt(cfg.d_in)

    def sample(n: int) -> tuple[Tensor, Tensor]:
        y = torch.arange(n) % cfg.n_classes
        y = y[torch.randperm(n, generator=g)]
        return centres[y] + torch.randn(n, cfg.d_in, generator=g), y

    return Task(*sample(cfg.n_train), *sample(cfg.n_val), d_out=cfg.n_classes, classification=True)


def teacher(cfg: TaskConfig, g: torch.Generator) -> Task:
    """y = A tanh(B x) / s + noise, x ~ N(0, I): a fixed random one-hidden-layer teacher, its
    outputs scaled by s (their std over both splits) so the targets have unit variance."""
    b = torch.randn(cfg.d_in, cfg.teacher_width, generator=g) / math.sqrt(cfg.d_in)
    a = torch.randn(cfg.teacher_width, cfg.d_out, generator=g) / math.sqrt(cfg.teacher_width)
    x = torch.randn(cfg.n_train + cfg.n_val, cfg.d_in, generator=g)
    clean = torch.tanh(x @ b) @ a
    y = clean / clean.std() + cfg.noise * torch.randn(clean.shape, generator=g)
    n = cfg.n_train
    return Task(x[:n], y[:n], x[n:], y[n:], d_out=cfg.d_out, classification=False)


def adding(cfg: TaskConfig, g: torch.Generator) -> Task:
    """The adding problem (Hochreiter & Schmidhuber 1997). Input (seq_len, 2): a value in
    U[0, 1] and a marker; exactly one marker in each half of the sequence. Target: the sum of the
    two marked values, whose variance is 2 * 1/12 = 1/6. Solving it means carrying information
    across seq_len / 2 steps, which a vanilla RNN's vanishing gradient prevents."""

    def sample(n: int) -> tuple[Tensor, Tensor]:
        half = cfg.seq_len // 2
        values = torch.rand(n, cfg.seq_len, generator=g)
        first = torch.randint(0, half, (n,), generator=g)
        second = torch.randint(half, cfg.seq_len, (n,), generator=g)
        markers = torch.zeros(n, cfg.seq_len)
        rows = torch.arange(n)
        markers[rows, first] = 1.0
        markers[rows, second] = 1.0
        target = values[rows, first] + values[rows, second]
        return torch.stack([values, markers], dim=-1), target.unsqueeze(-1)

    return Task(*sample(cfg.n_train), *sample(cfg.n_val), d_out=1, classification=False)


TASKS: dict[str, Callable[[TaskConfig, torch.Generator], Task]] = {
    f.__name__: f for f in (blobs, teacher, adding)
}

SEQUENCE_TASKS = ("adding",)


def data_shape(cfg: TaskConfig) -> tuple[tuple[int, ...], int]:
    """(one example's input shape, the number of outputs), from the config alone: what the
    model is built for, and what the memory check sizes before anything is generated."""
    if cfg.name == "adding":
        return (cfg.seq_len, 2), 1
    return (cfg.d_in,), cfg.n_classes if cfg.name == "blobs" else cfg.d_out


def build_task(cfg: TaskConfig, seed: int) -> Task:
    """Generate the task on the CPU from its own generator, so the data is the same on every
    device and does not depend on how much the model's initialization drew from the global RNG."""
    return TASKS[cfg.name](cfg, torch.Generator().manual_seed(seed))
