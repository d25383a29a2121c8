"""`GradexpCallback`: `gradexp.watch` inside a Lightning Trainer (`pip install "gradexp[lightning]"`).

Lightning calls `on_before_optimizer_step` once per optimizer step, after the backward passes
of its accumulated micro-batches and the AMP unscale, before its gradient clipping: there the
callback calls `monitor.step`, so the norms are the true gradient before clipping (an optimizer
that takes the scaled gradient itself, a fused Adam under AMP, is unscaled by gradexp instead).
The torch optimizer's step hooks then see the gradient it applied and the update. The loss is
the sum of what Lightning hands `on_before_backward` over the step's micro-batches (each already
divided by their number), with the loss scale taken out: the step's mean loss.
"""

from pathlib import Path

import lightning.pytorch as pl
from torch import Tensor

from gradexp.watching import Monitor, ending


class GradexpCallback(pl.Callback):
    def __init__(self, run_dir: str | Path | None = None, **options):
        """`run_dir` and `options` as for `gradexp.watch` (log_every, diagnostics_every, ...);
        the optimizer, the loss scaler and grad_accum are taken from the Trainer."""
        self.run_dir, self.options = run_dir, options
        self.monitor: Monitor | None = None
        self._loss: Tensor | None = None  # this step's loss so far, over its micro-batches
        self._scaler = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if len(trainer.optimizers) != 1:
            raise ValueError(
                f"GradexpCallback records one optimizer's steps; this Trainer has {len(trainer.optimizers)}"
            )
        optimizer = trainer.optimizers[0]
        self._scaler = getattr(trainer.precision_plugin, "scaler", None)
        self.monitor = Monitor(
            pl_module,
            optimizer,
            self.run_dir,
            scaler=self._scaler,
            unscaled_by_loop=not getattr(optimizer, "_step_supports_amp_scaling", False),
            grad_accum=trainer.accumulate_grad_batches,
            **self.options,
        )

    def on_before_backward(self, trainer, pl_module, loss: Tensor) -> None:
        loss = loss.detach().float()
        if self._scaler is not None and self._scaler.is_enabled():  # Lightning scaled it already
            loss = loss / self._scaler._get_scale_async()
        self._loss = loss if self._loss is None else self._loss + loss

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if self.monitor is not None:
            self.monitor.step(self._loss if self._loss is not None else 0.0)
        self._loss = None

    def on_train_end(self, trainer, pl_module) -> None:
        if self.monitor is not None:
            self.monitor.close("interrupted" if trainer.interrupted else "completed")

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if self.monitor is not None:
            self.monitor.close(*ending(exception))
