"""Optimizer and LR-schedule registries: `optimizer=<name>` and `scheduler=<name>`.

Every optimizer takes `lr` and `weight_decay` (L2: the penalty's gradient, weight_decay * w, is
added to the loss's gradient; AdamW instead shrinks the weights directly).

Every schedule takes `warmup_steps` (W): a linear ramp from 0 to lr over the first W optimizer
steps, then the schedule on a clock of its own that starts when the warmup ends (see Warmup).
"""

import functools
from collections.abc import Callable, Iterable
from typing import Any

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
    """eta_min + (lr - eta_min) (1 + cos(pi t / t_max)) / 2 (Loshchilov & Hutter 2017); `steps`
    is the schedule's own: the run's, less the warmup."""
    t_max = c.t_max if c.t_max is not None else steps
    return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=t_max, eta_min=c.eta_min)


Builder = Callable[[Optimizer, SchedulerConfig, int], LRScheduler]


class Warmup(LRScheduler):
    """lr * s / W at step s < W (step 0 at lr 0, as Hugging Face's
    get_linear_schedule_with_warmup), then `schedule` on its own clock: at step s >= W, the lr
    `schedule` alone gives at step s - W, number for number. (PyTorch's LinearLR refuses
    start_factor=0, so SequentialLR([LinearLR, schedule]) cannot start at lr 0.)

    `schedule` is built first, which sets the optimizer's lr to its step-0 value; it is not
    stepped during the warmup, and at step W its step-0 lr is put back. Its state travels in
    this scheduler's state_dict, so a resume mid-warmup or after it goes on exactly."""

    def __init__(self, optimizer: Optimizer, warmup_steps: int, schedule: LRScheduler) -> None:
        self.warmup_steps = warmup_steps
        self.schedule = schedule
        super().__init__(optimizer)  # sets base_lrs (the schedule's lr) and takes step 0

    def step(self) -> None:  # type: ignore[override]
        self.last_epoch += 1
        s, w = self.last_epoch, self.warmup_steps
        if s < w:
            lrs = [base * s / w for base in self.base_lrs]
        elif s == w:  # the schedule's step 0: the lr it set when it was built
            lrs = self.schedule.get_last_lr()
        else:
            self.schedule.step()
            lrs = self.schedule.get_last_lr()
        for group, lr in zip(self.optimizer.param_groups, lrs, strict=True):
            group["lr"] = lr
        self._last_lr = list(lrs)

    def state_dict(self) -> dict[str, Any]:
        state = {key: value for key, value in self.__dict__.items() if key not in ("optimizer", "schedule")}
        return {**state, "schedule": self.schedule.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        self.schedule.load_state_dict(state.pop("schedule"))
        self.__dict__.update(state)


def _with_warmup(schedule: Builder) -> Builder:
    """`schedule` after `warmup_steps` of linear warmup, built for the steps left after the
    warmup (those cosine's t_max=null anneals over); without warmup, `schedule` itself."""

    @functools.wraps(schedule)
    def build(opt: Optimizer, c: SchedulerConfig, steps: int) -> LRScheduler:
        if c.warmup_steps == 0:
            return schedule(opt, c, steps)
        return Warmup(opt, c.warmup_steps, schedule(opt, c, steps - c.warmup_steps))

    return build


SCHEDULERS: dict[str, Builder] = {f.__name__: _with_warmup(f) for f in (none, step, exponential, cosine)}
