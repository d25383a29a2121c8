"""Gradient clipping by value and by total norm (Pascanu et al. 2013), reusing the total norm
the recorder already measured instead of computing it a second time. Totals are taken from
`scaled_norms` (float64): torch's own float32 total would read an overflowing gradient as
infinite and clip it to zero instead of to max_norm."""

import torch
from torch import Tensor, nn
from torch.nn.utils import clip_grad_value_

from gradexp.config.schema import ClipConfig
from gradexp.scaled_norms import norms, total


def clip_gradients(params: list[nn.Parameter], total: Tensor, cfg: ClipConfig) -> Tensor:
    """Clip in place, element-wise first, then by total norm; return the total norm measured on
    the clipped gradients (a device tensor: nothing here waits for the GPU)."""
    grads = [p.grad for p in params if p.grad is not None]
    if cfg.value is not None:
        clip_grad_value_(params, cfg.value)
        total = _total(grads)
    if cfg.max_norm is not None and grads:
        _scale_to_max_norm(grads, cfg.max_norm, total)
    return _total(grads)


def _scale_to_max_norm(grads: list[Tensor], max_norm: float, total: Tensor) -> None:
    """torch's clip_grads_with_norm_ rule, max_norm / (total + 1e-6) capped at 1, with the
    coefficient taken from the float64 total and cast to the gradients' dtype (a float64 factor
    would take CUDA's foreach multiply off its fused path)."""
    coefficient = (max_norm / (total + 1e-6)).clamp(max=1.0)
    torch._foreach_mul_(grads, coefficient.to(grads[0].dtype))


def _total(grads: list[Tensor]) -> Tensor:
    return total(norms(grads))
