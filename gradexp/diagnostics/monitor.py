"""The engine's single entry point to the diagnostics: what to measure at a diagnostic step,
before and after the optimizer's update, handed to the recorder as device tensors."""

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch
from torch import Tensor, nn

from gradexp.config.schema import DiagnosticsConfig
from gradexp.diagnostics.histograms import Histograms, display_only
from gradexp.diagnostics.signals import MLPSignals
from gradexp.diagnostics.through_time import ThroughTime
from gradexp.models import MLP, RNN
from gradexp.recorder import GradientRecorder

POWER_ITERATIONS = 30  # per diagnostic step; warm starts make the estimate converge over training


class Diagnostics:
    def __init__(
        self,
        cfg: DiagnosticsConfig,
        model: nn.Module,
        family: str | None,
        recorder: GradientRecorder,
        last_step: int,
        grad_accum: int = 1,
    ):
        self.cfg, self.recorder, self.last_step = cfg, recorder, last_step
        self.names = [name for name, _ in model.layers()]
        self.weights = [w for _, w in model.layers()]
        self.signals = self.through_time = None
        if isinstance(model, MLP):
            hidden = list(zip(self.names[:-1], model.hidden))
            self.signals = MLPSignals(hidden, (self.names[-1], model.output), family, cfg.saturation_fraction)
            self.signals.grad_scale = float(grad_accum)
        if isinstance(model, RNN):
            self.through_time = ThroughTime(model)
            self.recurrent = [(n, w) for n, w in model.layers() if n.endswith("_hh")]
        self.histograms = Histograms()
        self._singular_vectors: dict[str, Tensor] = {}
        self._before: list[Tensor] | None = None  # the weights before the update, reused every time
        self._pending: tuple[int, list[str], list[Tensor], Tensor] | None = None

    def due(self, step: int) -> bool:
        """A diagnostic step: signals or histograms are due (activation histograms need the hooks)."""
        return self._every(self.cfg.every, step) or self._every(self.cfg.histograms_every, step)

    def _every(self, interval: int | None, step: int) -> bool:
        return interval is not None and (step % interval == 0 or step == self.last_step)

    def watch(self) -> AbstractContextManager:
        """Hooks for the forward and backward pass of a diagnostic step (MLPs only)."""
        return self.signals.capture() if self.signals else nullcontext()

    @torch.no_grad()
    def before_update(self, step: int, batch: tuple[Tensor, Tensor], loss_fn: Callable) -> None:
        """Collect the step's signals; snapshot the weights so the update can be measured. A step
        where only histograms are due records histograms alone."""
        if not self._every(self.cfg.every, step):
            activations = dict(self.signals.activations) if self.signals else {}
            if self.through_time:
                with torch.enable_grad():
                    _, activations = self.through_time.measure(*batch, loss_fn)
            self._histograms(step, activations)
            return
        tags, parts = [], []
        activations = dict(self.signals.activations) if self.signals else {}
        if self.signals:
            signal_tags, values = self.signals.values()
            tags, parts = [*signal_tags], [values]
        if self.through_time:
            with torch.enable_grad():
                norms, activations = self.through_time.measure(*batch, loss_fn)
            curves = torch.stack(list(norms.values()))  # recurrent layer x time step
            self.recorder.record_vectors(step, [f"grad_through_time/{n}" for n in norms], curves)
            tags += [f"grad_through_time_ratio/{n}" for n in norms]
            tags += [f"spectral_norm/{n}" for n, _ in self.recurrent]
            parts += [curves[:, 0] / curves[:, -1], self._spectral_norms()]
        weight_norms = torch.stack(torch._foreach_norm(self.weights))
        tags += [f"weight_norm/{n}" for n in self.names]
        parts.append(weight_norms)
        if self._every(self.cfg.histograms_every, step):
            self._histograms(step, activations)
        if self._before is None:
            self._before = [torch.empty_like(w) for w in self.weights]
        torch._foreach_copy_(self._before, self.weights)
        self._pending = (step, tags, parts, weight_norms)

    @torch.no_grad()
    def after_update(self) -> None:
        """update_ratio = ||W_after - W_before|| / ||W_before||, then hand everything over."""
        if self._pending is None:  # a histogram-only step
            return
        step, tags, parts, weight_norms = self._pending
        torch._foreach_sub_(self._before, self.weights)  # in place: before - after = -update
        deltas = torch.stack(torch._foreach_norm(self._before))
        parts.append(deltas / weight_norms.clamp_min(1e-30))
        tags += [f"update_ratio/{n}" for n in self.names]
        self.recorder.record_scalars(step, tags, torch.cat(parts))
        self._pending = None

    def state_dict(self) -> dict:
        """The power iteration's warm starts. (The histograms' samples need no saving: they are
        drawn from a generator seeded at start, in the same order after a resume.)"""
        return {"singular_vectors": {n: v.cpu() for n, v in self._singular_vectors.items()}}

    def load_state_dict(self, state: dict) -> None:
        device = self.weights[0].device
        self._singular_vectors = {n: v.to(device) for n, v in state["singular_vectors"].items()}

    def _spectral_norms(self) -> Tensor:
        """The largest singular value of each W_hh (for LSTM and GRU, the largest over their gate
        blocks, each an H x H recurrence), by power iteration warm-started from the last diagnostic
        step: unlike an SVD it never waits for the GPU and never raises on a diverged matrix."""
        sigmas = []
        for name, w in self.recurrent:
            blocks = w.view(-1, w.shape[1], w.shape[1])  # gate x H x H
            v = self._singular_vectors.get(name)
            if v is None:
                v = torch.ones(blocks.shape[0], w.shape[1], 1, device=w.device, dtype=w.dtype)
            for _ in range(POWER_ITERATIONS):
                v = blocks.transpose(1, 2) @ (blocks @ v)
                v = v / torch.linalg.vector_norm(v, dim=1, keepdim=True).clamp_min(1e-30)
            self._singular_vectors[name] = v
            sigmas.append(torch.linalg.vector_norm(blocks @ v, dim=1).amax())
        return torch.stack(sigmas)

    def _histograms(self, step: int, activations: dict[str, Tensor]) -> None:
        grads = [w.grad if w.grad is not None else torch.zeros_like(w) for w in self.weights]
        tags = [f"weights/{n}" for n in self.names] + [f"gradients/{n}" for n in self.names]
        tensors = self.weights + grads
        tags += [f"activations/{n}" for n in activations]
        tensors += list(activations.values())
        with display_only():
            stats = self.histograms.stats(tensors)
        self.recorder.record_histograms(step, tags, stats)
