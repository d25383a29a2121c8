"""Batched reductions over tensors of mixed shapes, without a host sync: tensors of one shape are
stacked and reduced together (an MLP's layers cost one reduction, a CNN's one per shape), and
the values are put in place with index tensors made once, on the device."""

import torch
from torch import Tensor

from gradexp.scaled_norms import row_norms


class Stacker:
    """torch.stack into buffers kept from step to step on the CPU, where allocating megabytes
    afresh at every diagnostic step costs page faults; on a GPU the caching allocator already
    reuses the memory, and a kept buffer would only hold it between diagnostic steps."""

    def __init__(self):
        self._buffers: dict[tuple, Tensor] = {}

    def stack(self, key: str, tensors: list[Tensor]) -> Tensor:
        first = tensors[0]
        if first.device.type != "cpu":
            return torch.stack(tensors)
        return torch.stack(
            tensors, out=self.buffer(key, (len(tensors), *first.shape), first.dtype, first.device)
        )

    def buffer(self, key: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
        """An uninitialized tensor to write into, kept from step to step on the CPU."""
        if device.type != "cpu":
            return torch.empty(shape, dtype=dtype, device=device)
        found = self._buffers.get((key, shape, dtype))
        if found is None:
            found = self._buffers[(key, shape, dtype)] = torch.empty(shape, dtype=dtype)
        return found


class Indices:
    """Index tensors on the device, made once per list of positions: building one from a Python
    list at every step would copy it from the host, a sync on a GPU."""

    def __init__(self):
        self._made: dict[tuple, Tensor] = {}

    def __call__(self, positions: list[int], device: torch.device) -> Tensor:
        key = (tuple(positions), str(device))
        if key not in self._made:
            self._made[key] = torch.tensor(positions, dtype=torch.long, device=device)
        return self._made[key]


def groups(tensors: list[Tensor | None], key=lambda i, t: ()) -> dict[tuple, list[int]]:
    """Indices of the present tensors, grouped by shape and dtype (and by `key`), in order."""
    found: dict[tuple, list[int]] = {}
    for i, t in enumerate(tensors):
        if t is not None:
            found.setdefault((tuple(t.shape), t.dtype, *key(i, t)), []).append(i)
    return found


def mean_std(stacked: Tensor) -> tuple[Tensor, Tensor]:
    """Each row's mean and (sample) std over all its values, the std in float64 and scaled where
    squares would overflow (activations of 1e20 and more). The mean's float32 sum overflows for
    rows of 1e34 and more: summed in float64 there (on a GPU always, where checking would sync).
    A CPU stack is ours and is centred in place, then a norm: a fraction of the cost of
    Tensor.std along a row, and as exact."""
    flat = stacked.flatten(1)
    if flat.dtype in (torch.float16, torch.bfloat16):
        flat = flat.float()
    if flat.device.type == "cpu":
        mean = flat.mean(dim=1)
        overflowed = ~torch.isfinite(mean)
        if overflowed.any():  # a NaN or infinite entry gives its own NaN or infinity again
            mean[overflowed] = flat[overflowed].double().mean(dim=1).to(mean.dtype)
    else:
        mean = flat.mean(dim=1, dtype=torch.float64).to(flat.dtype)
    centred = flat.sub_(mean[:, None]) if flat.device.type == "cpu" else flat - mean[:, None]
    return mean, row_norms(centred) / max(flat.shape[1] - 1, 1) ** 0.5


def scatter(n: int, like: Tensor, parts: list[tuple[list[int], Tensor]], indices: Indices) -> Tensor:
    """One float64 vector of n values from (positions, values) parts; NaN where no part gave a value
    (a site that did not run in this step's forward pass)."""
    if len(parts) == 1 and len(parts[0][0]) == n:
        positions, values = parts[0]
        if positions == list(range(n)):
            return values.double()
    out = torch.full((n,), float("nan"), dtype=torch.float64, device=like.device)
    for positions, values in parts:
        out.index_copy_(0, indices(positions, like.device), values.double())
    return out
