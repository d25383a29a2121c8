"""Batched reductions over tensors of mixed shapes: tensors of one shape are stacked into a buffer
kept from step to step (a fresh megabyte at every diagnostic step costs page faults), so an MLP's
layers cost one reduction, a CNN's a few (one per shape)."""

import torch
from torch import Tensor


class Stacker:
    def __init__(self):
        self._buffers: dict[tuple, Tensor] = {}

    def stack(self, key: str, tensors: list[Tensor]) -> Tensor:
        shape = (len(tensors), *tensors[0].shape)
        buffer = self._buffers.get((key, shape))
        if buffer is None or buffer.device != tensors[0].device or buffer.dtype != tensors[0].dtype:
            buffer = self._buffers[(key, shape)] = tensors[0].new_empty(shape)
        return torch.stack(tensors, out=buffer)


def groups(tensors: list[Tensor | None], key=lambda i, t: ()) -> dict[tuple, list[int]]:
    """Indices of the present tensors, grouped by shape (and by `key`), in order."""
    found: dict[tuple, list[int]] = {}
    for i, t in enumerate(tensors):
        if t is not None:
            found.setdefault((tuple(t.shape), t.dtype, *key(i, t)), []).append(i)
    return found


def mean_std(stacked: Tensor) -> tuple[Tensor, Tensor]:
    """Each row's mean and (sample) std over all its values. The stack is ours: it is centred in
    place, then a norm, a fraction of the cost of Tensor.std along a row on the CPU, and as exact."""
    flat = stacked.flatten(1)
    mean = flat.mean(dim=1)
    std = torch.linalg.vector_norm(flat.sub_(mean[:, None]), dim=1) / max(flat.shape[1] - 1, 1) ** 0.5
    return mean, std


def scatter(n: int, like: Tensor, parts: list[tuple[list[int], Tensor]]) -> Tensor:
    """One vector of n values from (indices, values) parts; NaN where no part gave a value (a site
    that did not run in this step's forward pass)."""
    if len(parts) == 1 and parts[0][0] == list(range(n)):
        return parts[0][1]
    out = like.new_full((n,), float("nan"))
    for index, values in parts:
        out[index] = values
    return out
