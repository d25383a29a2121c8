"""Batched reductions over tensors of mixed shapes, without a host sync: tensors of one shape are
stacked and reduced together (an MLP's layers cost one reduction, a CNN's one per shape), and
the values are put in place with index tensors made once, on the device."""

import torch
from torch import Tensor

from gradexp.scaled_norms import SMALLEST_EXACT, row_norms


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


class Rows:
    """Tensors of one shape and dtype, each reduced to a row of values. On the CPU each float32
    tensor is reduced where it lies, and read while it is in the core's cache: stacking them
    first cost a copy of every tensor, then passes over a stack larger than that cache (on a
    depth-20 MLP of width 256, the activation statistics took 0.75 ms per diagnostic step
    stacked and 0.62 ms one by one, alternated in one process). Elsewhere they are stacked once:
    on a GPU one kernel beats many launches, and half precision is read as float32."""

    def __init__(self, tensors: list[Tensor], stacker: Stacker, key: str):
        self.tensors = tensors
        one_by_one = tensors[0].device.type == "cpu" and tensors[0].dtype == torch.float32
        self.stacked = None if one_by_one else stacker.stack(key, tensors)

    def per_unit(self, how: str) -> Tensor:
        """Each tensor reduced over its first (batch) dimension by `how` ("sum" or "amax"), a row
        of its units (the entries past that dimension; one for a value per example)."""
        if self.stacked is not None:
            units = getattr(self.stacked, how)(dim=1)
        else:
            units = torch.stack([getattr(t, how)(dim=0) for t in self.tensors])
        return units.reshape(len(units), -1)

    def mean_std(self, sums: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Each tensor's mean and (sample) std over all its values, float64. `sums`: each
        tensor's sum, where the caller has it already (a ReLU's, from its per-unit sums).

        One by one, a float32 tensor takes a pass for its sum and one for its sum of squares (a
        dot product, right to about 1e-7), combined in float64. Where that would not be right
        to 1e-4 (the variance is under MOST_CANCELLED of the mean square, the squares overflow
        or underflow float32, a value is not finite), the tensor is measured again in float64,
        whose squares hold any float32 value's. A stack is centred first (_centred_mean_std)."""
        if self.stacked is not None:
            flat = self.stacked.flatten(1)
            return _centred_mean_std(flat.float() if flat.dtype in (torch.float16, torch.bfloat16) else flat)
        flats = [t.flatten() for t in self.tensors]
        n = flats[0].numel()
        total = (torch.stack([f.sum() for f in flats]) if sums is None else sums).double()
        squares = torch.stack([torch.dot(f, f) for f in flats]).double()
        mean = total / n
        spread = squares - total * mean  # n times the population variance
        right = torch.isfinite(spread) & (squares >= SMALLEST_SQUARES) & (spread >= MOST_CANCELLED * squares)
        std = (spread.clamp_min(0) / max(n - 1, 1)).sqrt()
        if not bool(right.all()):  # on the CPU, reading this costs no wait
            wrong = (~right).nonzero().flatten()
            again = torch.stack([flats[i].double() for i in wrong.tolist()])
            # mean and std apart: std_mean's one pass makes the mean of a row holding infinity NaN
            mean[wrong], std[wrong] = again.mean(dim=1), again.std(dim=1, correction=min(n - 1, 1))
        return mean, std


MOST_CANCELLED = 1e-3  # below this share of the mean square, a variance from sums loses digits
SMALLEST_SQUARES = SMALLEST_EXACT**2  # below this, float32 squares may have underflowed


def _centred_mean_std(flat: Tensor) -> tuple[Tensor, Tensor]:
    """The mean in float64, then the norm of the rows centred in float64 (a float32 mean's
    rounding would shift every value: 2.5e-4 of the std where the mean is 1e6 times the std),
    scaled where squares would overflow."""
    mean = flat.mean(dim=1, dtype=torch.float64)
    return mean, row_norms(flat - mean[:, None]) / max(flat.shape[1] - 1, 1) ** 0.5


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
