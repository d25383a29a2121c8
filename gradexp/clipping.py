"""Gradient clipping by value and by total norm (Pascanu et al. 2013), reusing the total norm
the recorder already measured instead of computing it a second time."""

import torch
from torch import Tensor, nn
from torch.nn.utils import clip_grad_value_, clip_grads_with_norm_, get_total_norm

from gradexp.config.schema import ClipConfig


def clip_gradients(params: list[nn.Parameter], total: Tensor, cfg: ClipConfig) -> Tensor:
    """Clip in place, element-wise first, then by total norm; return the total norm after."""
    if cfg.value is not None:
        clip_grad_value_(params, cfg.value)
        total = get_total_norm([p.grad for p in params if p.grad is not None])
    if cfg.max_norm is not None:
        clip_grads_with_norm_(params, cfg.max_norm, total)
        # clip_grads_with_norm_ scales by min(1, max_norm / (total + 1e-6)): the same factor here
        total = total * torch.clamp(cfg.max_norm / (total + 1e-6), max=1.0)
    return total
