"""The engine's single entry point to the diagnostics: at a diagnostic step, the hooks that the
due measurements need, then each measurement before and after the optimizer's update, handed to
the recorder as one device tensor of scalars per step."""

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch
from torch import Tensor

from gradexp.config.schema import DiagnosticsConfig
from gradexp.diagnostics.histograms import Histograms, display_only
from gradexp.measurements import MEASUREMENTS, Context, Measurement, Output
from gradexp.measurements.capture import Capture
from gradexp.network import Network
from gradexp.recorder import GradientRecorder


class Diagnostics:
    def __init__(
        self,
        cfg: DiagnosticsConfig,
        network: Network,
        recorder: GradientRecorder,
        last_step: int,
        grad_accum: int = 1,
        precision: str = "32",
        hooks: bool = True,
        batch: bool = True,
    ):
        """`hooks`: module hooks may be installed; `batch`: before_update is handed the step's
        batch and loss function (both False or True in gradexp's loop; a user's loop may lack
        them, and the measurements that need them say so in `not_applicable`)."""
        self.cfg, self.recorder, self.last_step = cfg, recorder, last_step
        self.accum_factor = float(grad_accum)
        self.context = context = Context(network, cfg, self.accum_factor, precision, hooks=hooks, batch=batch)
        self.measurements: list[Measurement] = []
        self.not_applicable: dict[str, str] = {}  # measurement -> why it does not apply here
        for kind in MEASUREMENTS:
            reason = kind.applies(context)
            if reason is None and kind.needs and not hooks:
                reason = "it needs module hooks, which would recompile a torch.compile'd model"
            if reason is None:
                self.measurements.append(kind(context))
            else:
                self.not_applicable[kind.__name__] = reason
        needs = {need for m in self.measurements for need in m.needs}
        self.capture = Capture(network, needs, set().union(*(m.inputs_read() for m in self.measurements)))
        recorder.gradient_prefixes |= {s.prefix for s in self.signals() if s.of_gradient}
        self.weights = [layer.weight for layer in network.layers]
        self.names = network.layer_names
        self.histograms = Histograms()
        self._pending: tuple[int, list[str], list[Tensor]] | None = None

    def signals(self) -> list:
        """What the applicable measurements write (for the charts)."""
        return [s for m in self.measurements for s in m.signals]

    def due(self, step: int) -> bool:
        """A diagnostic step: signals or histograms are due (activation histograms need the hooks)."""
        return self._every(self.cfg.every, step) or self._every(self.cfg.histograms_every, step)

    def _every(self, interval: int | None, step: int) -> bool:
        return interval is not None and (step % interval == 0 or step == self.last_step)

    def watch(self) -> AbstractContextManager:
        """Hooks for the forward and backward pass of a diagnostic step."""
        return self.capture.hooks() if self.capture.needs else nullcontext()

    @torch.no_grad()
    def before_update(
        self,
        step: int,
        batch: tuple[Tensor, Tensor] | None,
        loss_fn: Callable | None,
        loss_scale: Tensor | None = None,
        scaled_gradients: bool = False,
        hooked: bool = True,
    ) -> None:
        """Run the due measurements; a step where only histograms are due records histograms
        alone (with the activations that the measurements feeding them captured). The hooks saw
        the gradient of the loss / grad_accum, times the loss scale: `grad_scale` undoes both.
        `scaled_gradients`: the weights' .grad still carry the loss scale (a user's loop, before
        its GradScaler unscales them); their histograms are divided by it. `hooked`: the hooks
        were open through the step's passes; where not, the measurements that need them wait."""
        self.context.grad_scale = self.accum_factor if loss_scale is None else self.accum_factor / loss_scale
        signals = self._every(self.cfg.every, step)
        tags, parts, activations = [], [], {}
        for m in self.measurements:
            if m.needs and not hooked:
                continue
            if signals or m.due_with_histograms:
                out = m.measure(self.capture, batch, loss_fn)
                activations.update(out.activations)
                if signals:
                    self._collect(step, out, tags, parts)
        if self._every(self.cfg.histograms_every, step):
            self._histograms(step, activations, loss_scale if scaled_gradients else None)
        self._pending = (step, tags, parts) if signals else None
        self.capture.clear()  # the batch's activations and gradients are not kept to the next step

    @torch.no_grad()
    def after_update(self) -> None:
        """What the update did, then everything of the step to the recorder at once."""
        if self._pending is None:  # a histogram-only step
            return
        step, tags, parts = self._pending
        for m in self.measurements:
            out = m.after_update()
            if out is not None:
                self._collect(step, out, tags, parts)
        if tags:
            self.recorder.record_scalars(step, tags, torch.cat([p.reshape(-1).double() for p in parts]))
        self._pending = None

    def _collect(self, step: int, out: Output, tags: list[str], parts: list[Tensor]) -> None:
        for names, values in out.scalars:
            tags += names
            parts.append(values)
        for names, vectors in out.vectors:
            self.recorder.record_vectors(step, names, vectors)

    def state_dict(self) -> dict:
        """The measurements' own state (the power iteration's warm starts). The histograms'
        samples need no saving: they are drawn from a generator seeded at start, in the same
        order after a resume."""
        state = {}
        for m in self.measurements:
            state.update(m.state_dict())
        return state

    def load_state_dict(self, state: dict) -> None:
        for m in self.measurements:
            m.load_state_dict(state)

    def _histograms(self, step: int, activations: dict[str, Tensor], grad_divisor: Tensor | None) -> None:
        grads = [w.grad if w.grad is not None else torch.zeros_like(w) for w in self.weights]
        tags = [f"weights/{n}" for n in self.names] + [f"gradients/{n}" for n in self.names]
        tensors = self.weights + grads
        tags += [f"activations/{n}" for n in activations]
        tensors += list(activations.values())
        with display_only():
            stats = self.histograms.stats(tensors)
        if grad_divisor is not None:  # dividing every value moves no value to another bin
            rows = slice(len(self.weights), 2 * len(self.weights))
            stats[rows, [0, 1, 3]] /= grad_divisor
            stats[rows, 4] /= grad_divisor.double().square()
        self.recorder.record_histograms(step, tags, stats)
