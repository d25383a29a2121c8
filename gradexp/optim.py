"""Optimizer and LR-schedule registries: `optimizer=<name>` and `scheduler=<name>`.

Every optimizer takes `lr` and `weight_decay` (L2: the penalty's gradient, weight_decay * w, is
added to the loss's gradient; AdamW instead shrinks the weights directly).
"""

from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from gradexp.config.schema import OptimizerConfig, SchedulerConfig

Params = Iterable[nn.Parameter]


def sgd(params: Params, c: OptimizerConfig) -> Optimizer:
    """w <- w - lr * g. The step is proportional to the gradient: a layer whose gradient has
    vanished stops learning."""
    return torch.optim.SGD(params, lr=c.lr, weight_decay=c.weight_decay)


def momentum(params: Params, c: OptimizerConfig) -> Optimizer:
    """Heavy ball (Polyak 1964): steps follow a running sum of gradients, amplifying a small but
    consistent gradient by up to 1 / (1 - momentum)."""
    return torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)


def nesterov(params: Params, c: OptimizerConfig) -> Optimizer:
    """Nesterov momentum (Sutskever et al. 2013): the gradient is taken at the look-ahead point."""
    return torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, nesterov=True, weight_decay=c.weight_decay)


def adagrad(params: Params, c: OptimizerConfig) -> Optimizer:
    """AdaGrad (Duchi et al. 2011): divides by the root of the sum of all past squared
    gradients, so the effective step only shrinks."""
    return torch.optim.Adagrad(params, lr=c.lr, lr_decay=c.lr_decay, eps=c.eps, weight_decay=c.weight_decay)


def rmsprop(params: Params, c: OptimizerConfig) -> Optimizer:
    """RMSProp (Tieleman & Hinton 2012): divides by a running RMS of the gradient, so layers with
    small gradients get steps as large as the others."""
    return torch.optim.RMSprop(
        params, lr=c.lr, alpha=c.alpha, eps=c.eps, momentum=c.momentum, weight_decay=c.weight_decay
    )


def adam(params: Params, c: OptimizerConfig) -> Optimizer:
    """Adam (Kingma & Ba 2015): momentum over an RMS-normalized gradient; each step is about lr in
    size whatever the gradient's scale."""
    return torch.optim.Adam(params, lr=c.lr, betas=tuple(c.betas), eps=c.eps, weight_decay=c.weight_decay)


def adamw(params: Params, c: OptimizerConfig) -> Optimizer:
    """AdamW (Loshchilov & Hutter 2019): Adam with weight decay applied to the weights, not
    folded into the normalized gradient."""
    return torch.optim.AdamW(params, lr=c.lr, betas=tuple(c.betas), eps=c.eps, weight_decay=c.weight_decay)


OPTIMIZERS: dict[str, Callable[[Params, OptimizerConfig], Optimizer]] = {
    f.__name__: f for f in (sgd, momentum, nesterov, adagrad, rmsprop, adam, adamw)
}


def none(opt: Optimizer, c: SchedulerConfig, steps: int) -> LRScheduler:
    """A constant learning rate."""
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)


def step(opt: Optimizer, c: SchedulerConfig, steps: int) -> LRScheduler:
    """lr * gamma^floor(t / step_size)."""
    return torch.optim.lr_scheduler.StepLR(opt, step_size=c.step_size, gamma=c.gamma)


def exponential(opt: Optimizer, c: SchedulerConfig, steps: int) -> LRScheduler:
    """lr * gamma^t."""
    return torch.optim.lr_scheduler.ExponentialLR(opt, gamma=c.gamma)


def cosine(opt: Optimizer, c: SchedulerConfig, steps: int) -> LRScheduler:
    """eta_min + (lr - eta_min) (1 + cos(pi t / t_max)) / 2 (Loshchilov & Hutter 2017)."""
    t_max = c.t_max if c.t_max is not None else steps
    return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=t_max, eta_min=c.eta_min)


SCHEDULERS: dict[str, Callable[[Optimizer, SchedulerConfig, int], LRScheduler]] = {
    f.__name__: f for f in (none, step, exponential, cosine)
}
