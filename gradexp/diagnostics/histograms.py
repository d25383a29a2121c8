"""Histograms built on the training device in one batched pass, so that a histogram step never
waits for the GPU: the host only receives, per tensor, [min, max, count, sum, sum of squares,
bin counts] at the next flush.

Each histogram is drawn from a fixed random sample of at most SAMPLES values of its tensor, so
its cost is bounded whatever the model's size (the exact norms are in the scalars). The sample's
indices come from a private generator, so drawing them never moves the training's random state.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

from gradexp.scaled_norms import row_norms

BINS = 30
SAMPLES = 4096


class Histograms:
    def __init__(self):
        self._generator = torch.Generator().manual_seed(0)
        self._indices: dict[tuple[int, str], Tensor] = {}
        self._layouts: dict[tuple, _Layout] = {}

    def _index(self, numel: int, device: torch.device) -> Tensor:
        """SAMPLES positions out of `numel`, drawn once per size and device."""
        key = (numel, str(device))
        if key not in self._indices:
            index = torch.randperm(numel, generator=self._generator)[:SAMPLES].sort().values
            self._indices[key] = index.to(device)
        return self._indices[key]

    def _samples(self, tensors: list[Tensor]) -> "_Layout":
        """Each tensor's sample as a row of one (tensors x SAMPLES) matrix, gathered straight into
        a buffer kept from call to call (a fresh megabyte costs page faults). A tensor with fewer
        values fills the start of its row and repeats its first value in the rest, which leaves
        the row's min and max alone. Rows are float32 whatever each tensor's dtype (under
        autocast, float16 activations beside float32 weights)."""
        first = tensors[0]
        key = (tuple(t.numel() for t in tensors), str(first.device))
        if key not in self._layouts:
            self._layouts[key] = _Layout.of(key[0], first)
        layout = self._layouts[key]
        for row, t in zip(layout.samples, tensors):
            flat = t.detach().reshape(-1)
            if flat.numel() < SAMPLES:
                row[: flat.numel()].copy_(flat)
                row[flat.numel() :].copy_(flat[:1].expand(SAMPLES - flat.numel()))
            elif flat.dtype != row.dtype:
                row.copy_(flat[self._index(flat.numel(), flat.device)])
            else:
                torch.index_select(flat, 0, self._index(flat.numel(), flat.device), out=row)
        return layout

    def stats(self, tensors: list[Tensor]) -> Tensor:
        """One row per tensor: [min, max, count, sum, sum of squares, *BINS counts]. Everything but
        the bin counts is a dense reduction along the rows, the counts one scatter."""
        layout = self._samples(tensors)
        x = layout.samples.float()
        n = x.shape[0]
        low, high = x.amin(dim=1), x.amax(dim=1)
        width = ((high - low) / BINS).clamp_min(1e-30)
        position = (x - low[:, None]).div_(width[:, None]).nan_to_num_(0.0).floor_().clamp_(0, BINS - 1)
        index = position.long().add_(layout.offsets).view(-1)
        index.index_fill_(0, layout.padding, n * BINS)  # the padding goes to a bin dropped below
        counts = x.new_zeros(n * BINS + 1).scatter_add_(0, index, x.new_ones(()).expand(index.shape))
        x.view(-1).index_fill_(0, layout.padding, 0.0)  # and adds nothing to the sums
        squares = row_norms(x).square()  # float64: activations of 1e20 would overflow float32
        row = torch.stack([low, high, layout.sizes.to(x.dtype), x.sum(dim=1)], dim=1).double()
        return torch.cat([row, squares[:, None], counts[:-1].view(n, BINS).double()], dim=1)


@dataclass
class _Layout:
    """The sample matrix of one list of tensor sizes, and what its rows need, on the device."""

    samples: Tensor  # tensors x SAMPLES
    sizes: Tensor  # values sampled per row
    padding: Tensor  # flat positions past each row's values
    offsets: Tensor  # the first bin of each row, in the flat bin counts

    @classmethod
    def of(cls, numels: tuple[int, ...], like: Tensor) -> "_Layout":
        sizes = torch.tensor([min(n, SAMPLES) for n in numels])
        padding = (torch.arange(SAMPLES)[None, :] >= sizes[:, None]).view(-1).nonzero().view(-1)
        offsets = torch.arange(len(numels))[:, None] * BINS
        samples = torch.zeros(len(numels), SAMPLES)
        return cls(*(t.to(like.device) for t in (samples, sizes, padding, offsets)))


@contextmanager
def display_only() -> Iterator[None]:
    """Histograms are drawn, never trained on: under trainer.deterministic they may use CUDA's
    scatter kernels, which have no deterministic version (their sums can differ in the last bit
    from run to run; the counts cannot)."""
    if not torch.are_deterministic_algorithms_enabled():  # nothing to switch (see engine._set_determinism)
        yield
        return
    torch.use_deterministic_algorithms(False)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(True)
