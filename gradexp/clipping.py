"""Gradient clipping by value and by total norm (Pascanu et al. 2013), reusing the total norm
the recorder already measured instead of computing it a second time."""

from torch import Tensor, nn
from torch.nn.utils import clip_grad_value_, clip_grads_with_norm_, get_total_norm

from gradexp.config.schema import ClipConfig


def clip_gradients(params: list[nn.Parameter], total: Tensor, cfg: ClipConfig) -> Tensor:
    """Clip in place, element-wise first, then by total norm; return the total norm measured on
    the clipped gradients (a device tensor: nothing here waits for the GPU)."""
    grads = [p.grad for p in params if p.grad is not None]
    if cfg.value is not None:
        clip_grad_value_(params, cfg.value)
        total = get_total_norm(grads)
    if cfg.max_norm is not None:
        clip_grads_with_norm_(params, cfg.max_norm, total)
    return get_total_norm(grads)
