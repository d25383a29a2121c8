"""Histograms built on the training device in one batched pass over many tensors, so that a
histogram step never waits for the GPU and costs a handful of kernels whatever the depth: the
host only receives, per tensor, [min, max, count, sum, sum of squares, bin counts] at the next
flush."""

import torch
from tensorboard.compat.proto.summary_pb2 import HistogramProto
from torch import Tensor

BINS = 30
STATS = 5  # min, max, count, sum, sum of squares


def histogram_stats(tensors: list[Tensor]) -> Tensor:
    """One row per tensor: [min, max, count, sum, sum of squares, *BINS counts]."""
    sizes = [t.numel() for t in tensors]
    x = torch.cat([t.detach().flatten().float() for t in tensors])
    n = len(tensors)
    segment = torch.repeat_interleave(torch.arange(n, device=x.device), torch.tensor(sizes, device=x.device))
    low = x.new_full((n,), float("inf")).scatter_reduce(0, segment, x, "amin")
    high = x.new_full((n,), float("-inf")).scatter_reduce(0, segment, x, "amax")
    width = ((high - low) / BINS).clamp_min(1e-30)
    index = ((x - low[segment]) / width[segment]).nan_to_num(0.0).floor().clamp(0, BINS - 1).long()
    counts = x.new_zeros(n * BINS).scatter_add_(0, segment * BINS + index, torch.ones_like(x))
    sums = x.new_zeros(n).scatter_add_(0, segment, x)
    squares = x.new_zeros(n).scatter_add_(0, segment, x * x)
    count = torch.tensor(sizes, dtype=x.dtype, device=x.device)
    return torch.cat([torch.stack([low, high, count, sums, squares], dim=1), counts.view(n, BINS)], dim=1)


def histogram_proto(stats: list[float]) -> HistogramProto:
    """TensorBoard's histogram record from one row of `histogram_stats`, on the host."""
    low, high, count, total, squares, *counts = stats
    width = (high - low) / BINS
    limits = [low + width * (i + 1) for i in range(BINS)]
    return HistogramProto(
        min=low, max=high, num=count, sum=total, sum_squares=squares, bucket_limit=limits, bucket=counts
    )
