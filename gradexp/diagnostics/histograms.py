"""Histograms built on the training device in one batched pass, so that a histogram step never
waits for the GPU: the host only receives, per tensor, [min, max, count, sum, sum of squares,
bin counts] at the next flush.

Each histogram is drawn from a fixed random sample of at most SAMPLES values of its tensor, so
its cost is bounded whatever the model's size (the exact norms are in the scalars). The sample's
indices come from a private generator, so drawing them never moves the training's random state.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from tensorboard.compat.proto.summary_pb2 import HistogramProto
from torch import Tensor

BINS = 30
SAMPLES = 4096


class Histograms:
    def __init__(self):
        self._generator = torch.Generator().manual_seed(0)
        self._indices: dict[tuple[int, str], Tensor] = {}
        self._segments: dict[tuple[tuple[int, ...], str], tuple[Tensor, Tensor]] = {}  # ids, counts

    def _sample(self, t: Tensor) -> Tensor:
        flat = t.detach().flatten()
        if flat.numel() <= SAMPLES:
            return flat
        key = (flat.numel(), str(flat.device))
        if key not in self._indices:
            index = torch.randperm(flat.numel(), generator=self._generator)[:SAMPLES].sort().values
            self._indices[key] = index.to(flat.device)
        return flat[self._indices[key]]

    def stats(self, tensors: list[Tensor]) -> Tensor:
        """One row per tensor: [min, max, count, sum, sum of squares, *BINS counts]."""
        samples = [self._sample(t) for t in tensors]
        x = torch.cat(samples).float()
        n, device = len(samples), x.device
        sizes = tuple(s.numel() for s in samples)
        key = (sizes, str(device))
        if key not in self._segments:  # built once per shape: no host-to-device copy on later calls
            ids = torch.repeat_interleave(torch.arange(n), torch.tensor(sizes))
            self._segments[key] = (ids.to(device), torch.tensor(sizes, dtype=x.dtype).to(device))
        segment, count = self._segments[key]
        low = x.new_full((n,), float("inf")).scatter_reduce(0, segment, x, "amin")
        high = x.new_full((n,), float("-inf")).scatter_reduce(0, segment, x, "amax")
        width = ((high - low) / BINS).clamp_min(1e-30)
        index = ((x - low[segment]) / width[segment]).nan_to_num(0.0).floor().clamp(0, BINS - 1).long()
        counts = x.new_zeros(n * BINS).scatter_add_(0, segment * BINS + index, torch.ones_like(x))
        sums = x.new_zeros(n).scatter_add_(0, segment, x)
        squares = x.new_zeros(n).scatter_add_(0, segment, x * x)
        return torch.cat([torch.stack([low, high, count, sums, squares], dim=1), counts.view(n, BINS)], dim=1)


@contextmanager
def display_only() -> Iterator[None]:
    """Histograms are drawn, never trained on: under trainer.deterministic they may use CUDA's
    scatter kernels, which have no deterministic version (their sums can differ in the last bit
    from run to run; the counts cannot)."""
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(False)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was)


def histogram_proto(stats: list[float]) -> HistogramProto:
    """TensorBoard's histogram record from one row of `Histograms.stats`, on the host."""
    low, high, count, total, squares, *counts = stats
    width = (high - low) / BINS
    limits = [low + width * (i + 1) for i in range(BINS)]
    return HistogramProto(
        min=low, max=high, num=count, sum=total, sum_squares=squares, bucket_limit=limits, bucket=counts
    )
