"""Euclidean norms that are right wherever the entries are finite, from 1e-30 to float32's largest.

A float32 sum of squares overflows once the norm passes about 1.8e19 and loses its small terms
once they fall below about 1e-23 (their squares underflow), while the entries themselves go to
3.4e38 and down to 1e-45. Vanishing and exploding gradients live exactly there, so a plain norm
would report a false divergence, or a false zero, at the step that matters most.

The fix is the one LAPACK's `nrm2` uses, in batched form: divide each tensor by a power of two
near its largest entry (exact: only the exponent changes), take the norm of what is left, whose
squares can neither overflow nor underflow, and multiply back in float64, so a norm past
float32's range stays finite. float16 needs no scaling: the squares of its
entries (6e-8 to 65504) always fit float32, which accumulates them.

On the CPU the plain norm runs first (for float32, from BLAS dot products: `_squares`) and only
the tensors whose result left the range where float32 is exact (non-finite, or below
SMALLEST_EXACT) are measured again, scaled: a step with ordinary gradients costs one comparison
more. A float32 run of squares rounds more the longer it is (on 16M entries, 9e-6 relative for
a dot product, 6e-4 for a norm), so the CPU sums at most CHUNK entries at a time and adds the
partial sums in float64. On a GPU, checking would make the host wait, so every tensor takes
the scaled path: a fused max over all tensors, then per tensor a multiply (a transient copy of
that tensor) and a norm.
"""

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

# Below this norm, float32's squares may have dropped terms: each entry's square is rounded to
# within 1.4e-45 (a subnormal's spacing), so n entries lose at most n * 1.4e-45 of a sum of
# squares >= 1e-30, a relative 1e-5 only past 7e9 entries. Smaller norms are measured again.
SMALLEST_EXACT = 1e-15
# CPU: entries per float32 partial sum. Rounding stays below 1e-6 relative at this length (about
# 2e-7 on random entries, where a single dot product over 16M entries is off by 1e-4), and a
# dot product this long runs on both cores: a Transformer's 1M-entry dL/dy took 16 calls of 2^16
# entries, and its diagnostic step 2 ms more (alternated in one process).
CHUNK = 2**18
_OWNERS: dict[tuple, Tensor] = {}  # CPU: which tensor each chunk belongs to, per layout of sizes


class Layout(NamedTuple):
    """What `norms` needs to know of a list of tensors, found in one pass over it (at 42 tensors,
    a tenth of the norm itself): a caller whose tensors keep their shapes and dtypes, like the
    recorder's gradients, makes it once."""

    dtype: torch.dtype | None  # the accumulator; None for float32 tensors (no cast to check)
    # float32 also for float16 and bfloat16 (a half-precision norm would round to three digits
    # and overflow at 65504); float64 where a tensor is float64
    chunked: bool  # a tensor has more than CHUNK entries (summed in pieces on the CPU)

    @classmethod
    def of(cls, tensors: Sequence[Tensor]) -> "Layout":
        dtypes = {t.dtype for t in tensors}
        if dtypes <= {torch.float32}:
            dtype = None
        else:
            dtype = torch.float64 if torch.float64 in dtypes else torch.float32
        return cls(dtype, any(t.numel() > CHUNK for t in tensors))


def norms(tensors: Sequence[Tensor], layout: Layout | None = None) -> Tensor:
    """Each tensor's Euclidean norm, as one vector on the tensors' device. A tensor with a NaN or
    infinite entry has a NaN or infinite norm; any other has a finite one. The vector is float64,
    except on the CPU when every plain float32 norm was exact: it is then the float32 result as
    it came (each value in [1e-15, 1.8e19]; converting 40 values to float64 costs a tenth of the
    norm itself on a 2-core CPU). Sum such norms' squares in float64 (`total`)."""
    if not tensors:
        return torch.zeros(0, dtype=torch.float64)
    if tensors[0].device.type != "cpu":
        return _scaled(tensors)
    return checked(_float32_sums(tensors, layout), tensors)


def checked(plain: Tensor, tensors: Sequence[Tensor]) -> Tensor:
    """CPU norms taken from float32 sums (as `norms` takes them), with those outside the range
    where such sums are exact measured again, scaled; float32 as they came when none is. A
    tensor whose largest entry is zero, infinite or NaN has that as its norm, with no scaling:
    a dead layer's gradient is exactly zero at every step, and a dying ReLU network has many."""
    low, high = torch.aminmax(plain)  # one reduction and no mask: the common case is cheap
    if float(low) >= SMALLEST_EXACT and float(high) < float("inf"):  # a NaN fails both
        return plain
    result = plain.double()
    index = [i for i in _outside_exact_range(result).nonzero().flatten().tolist() if tensors[i].numel()]
    if not index:  # empty tensors, whose plain norm of zero is right
        return result
    largest = _largest([tensors[i] for i in index])
    result[index] = largest.double()  # the norm where the largest entry is 0, inf or NaN
    ordinary = (torch.isfinite(largest) & (largest > 0)).tolist()
    scaled = [k for k, keep in enumerate(ordinary) if keep]
    if scaled:
        chosen = [tensors[index[k]] for k in scaled]
        result[[index[k] for k in scaled]] = _scaled(chosen, largest[scaled])
    return result


def total(values: Tensor) -> Tensor:
    """The norm over norms (of a whole gradient, from its parameters'), in float64: squares of
    norms up to 1.8e19 overflow float32 as soon as two are added."""
    return torch.linalg.vector_norm(values, dtype=torch.float64)


def row_norms(x: Tensor) -> Tensor:
    """The Euclidean norm of each row of x (all dimensions past the first), float64."""
    flat = x.flatten(1)
    if flat.shape[1] == 0:
        return torch.zeros(flat.shape[0], dtype=torch.float64, device=flat.device)
    if flat.device.type != "cpu":
        return _scaled_rows(flat)
    plain = _float32_row_sums(flat)
    suspect = _outside_exact_range(plain)
    if suspect.any():
        plain[suspect] = _scaled_rows(flat[suspect])
    return plain


def power_of_two_below(largest: Tensor) -> Tensor:
    """2^-e with largest = m 2^e, m in [0.5, 1): scaled, the largest entry lies in [0.5, 1), or
    for a subnormal largest entry at least 2^-23 (2^126 is float32's largest power of two but
    one). One where largest is zero, infinite or NaN, whose norm is then zero, infinite or NaN."""
    exponent = torch.frexp(largest).exponent.clamp_min(-126)
    ordinary = torch.isfinite(largest) & (largest > 0)
    return torch.where(ordinary, torch.ldexp(torch.ones_like(largest), -exponent), 1.0)


def _largest(tensors: Sequence[Tensor]) -> Tensor:
    """Each tensor's largest absolute entry (none may be empty), in the accumulator's dtype."""
    return torch.stack(torch._foreach_norm(tensors, float("inf"), dtype=_accumulator(tensors)))


def _scaled(tensors: Sequence[Tensor], largest: Tensor | None = None) -> Tensor:
    """Norms of the tensors divided by a power of two near their largest entry, multiplied back
    (float16 and empty tensors as they are). `largest`: each tensor's largest absolute entry,
    where the caller has it already (`checked`)."""
    as_is = [i for i, t in enumerate(tensors) if t.dtype == torch.float16 or t.numel() == 0]
    rest = [i for i in range(len(tensors)) if i not in set(as_is)]
    result: list[Tensor | None] = [None] * len(tensors)
    if as_is:
        result_as_is = _float32_sums([tensors[i] for i in as_is]).double()
        for i, value in zip(as_is, result_as_is.unbind()):
            result[i] = value
    if rest:
        chosen = [tensors[i] for i in rest]
        largest = _largest(chosen) if largest is None else largest[rest]
        scale = power_of_two_below(largest)  # a 0-dim factor below keeps each tensor's dtype
        sums = torch.cat([_float32_sums([t * s]) for t, s in zip(chosen, scale.unbind())]).double()
        for i, value in zip(rest, (sums / scale.double()).unbind()):
            result[i] = value
    return torch.stack(result)


def _scaled_rows(flat: Tensor) -> Tensor:
    if flat.dtype == torch.float16 or flat.shape[0] == 0:
        return _float32_row_sums(flat)
    largest = torch.linalg.vector_norm(flat, float("inf"), dim=1, dtype=_accumulator([flat]))
    scale = power_of_two_below(largest)
    return _float32_row_sums(flat * scale.to(flat.dtype)[:, None]) / scale.double()


def _float32_sums(tensors: Sequence[Tensor], layout: Layout | None = None) -> Tensor:
    """Each tensor's norm from float32 sums of squares (float64 for a float64 tensor); on the CPU
    in partial sums of at most CHUNK entries, added in float64."""
    dtype, chunked = layout or Layout.of(tensors)
    if tensors[0].device.type != "cpu":
        return torch.stack(_foreach_norm(tensors, dtype))
    if not chunked:
        return _squares(tensors).sqrt() if dtype is None else torch.stack(_foreach_norm(tensors, dtype))
    pieces, sizes = [], []
    for t in tensors:
        parts = t.flatten().split(CHUNK) if t.numel() > CHUNK else (t,)
        pieces += parts
        sizes.append(len(parts))
    partial = (
        _squares(pieces).double()
        if dtype is None
        else torch.stack(_foreach_norm(pieces, dtype)).double().square()
    )
    owners = _OWNERS.get(tuple(sizes))
    if owners is None:
        owners = _OWNERS[tuple(sizes)] = torch.repeat_interleave(
            torch.arange(len(sizes)), torch.tensor(sizes)
        )
    return partial.new_zeros(len(tensors)).index_add_(0, owners, partial).sqrt()


def sum_of_squares(tensor: Tensor) -> Tensor:
    """One float32 CPU tensor's sum of squares, taken as `_squares` takes it (a BLAS dot product,
    in CHUNK pieces added in float64 past CHUNK entries), for a caller that reads each tensor
    while it is still in cache: `checked(torch.stack(sums).sqrt(), tensors)` are their norms."""
    flat = tensor.flatten()
    if flat.numel() <= CHUNK:
        return torch.dot(flat, flat)
    return _squares(flat.split(CHUNK)).double().sum().float()


def norm_now(tensor: Tensor) -> Tensor:
    """One tensor's norm as a 0-dim tensor, right as `norms` is, for a hook that reduces a
    tensor where it is produced instead of keeping it. On the CPU a float32 tensor takes one
    sum of squares while it is in cache, and reading the result to check its range costs no
    wait; elsewhere, and outside that range, `norms` takes it (scaled; float64)."""
    if tensor.device.type == "cpu" and tensor.dtype == torch.float32:
        plain = sum_of_squares(tensor).sqrt()
        if SMALLEST_EXACT <= float(plain) < float("inf"):  # a NaN fails
            return plain
    return norms([tensor])[0]


def _squares(tensors: Sequence[Tensor]) -> Tensor:
    """Each float32 CPU tensor's sum of squares, as a BLAS dot product of the tensor with itself.
    In a training step they cost half of what `_foreach_norm` costs there (measured each in
    place of the other, on a depth-20 MLP of width 256: 2.4% against 5.4% of a step), and they
    round less (2e-9 against 2e-7 relative on 65536 entries). Concatenating the small tensors
    (biases) to save their calls cost more than it saved. `flatten` returns a 1-d tensor as it is,
    where `reshape(-1)` makes a view of it: 1% of the MLP's step in gradexp.watch, for its biases."""
    return torch.stack([torch.dot(flat, flat) for flat in (t.flatten() for t in tensors)])


def _foreach_norm(tensors: Sequence[Tensor], dtype: torch.dtype | None) -> tuple[Tensor, ...]:
    """float32 tensors take the call without a dtype, which skips a cast check per tensor (3%)."""
    return torch._foreach_norm(tensors) if dtype is None else torch._foreach_norm(tensors, 2, dtype=dtype)


def _float32_row_sums(flat: Tensor) -> Tensor:
    dtype = _accumulator([flat])
    if flat.device.type != "cpu" or flat.shape[1] <= CHUNK:
        return torch.linalg.vector_norm(flat, dim=1, dtype=dtype).double()
    parts = [torch.linalg.vector_norm(p, dim=1, dtype=dtype) for p in flat.split(CHUNK, dim=1)]
    return torch.linalg.vector_norm(torch.stack(parts, dim=1).double(), dim=1)


def _outside_exact_range(plain: Tensor) -> Tensor:
    """Where a norm from float32 sums may be wrong: NaN, infinite (an overflow, or a true
    infinity) or small enough that squares may have underflowed."""
    return ~(torch.isfinite(plain) & (plain >= SMALLEST_EXACT))


def _accumulator(tensors: Sequence[Tensor]) -> torch.dtype:
    """The dtype to sum in, always named (Layout's None for float32 spares a cast check)."""
    return Layout.of(tensors).dtype or torch.float32
