"""Per-layer gradient norms, measured every step at the cost of one batched kernel and kept on
the training device until a flush, so recording never makes the host wait for the GPU.

Every step is measured, not only the logged ones, because divergence must be caught at the step
it happens; the extra cost is one read of the gradients (on the CPU a BLAS dot product of each
with itself, on a GPU batched kernels), a few percent of a step. The norms are scaled where
float32's squares would overflow or underflow (`scaled_norms`), so a step diverges only when the
loss or a gradient entry is itself NaN or infinite, never because gradexp's own arithmetic
overflowed.

Under a loss scale, a step whose scaled gradient overflowed is skipped by the scaler: that is
the scale doing its job, counted as `amp/skipped`, not a divergence. Nothing read off its
backward pass is written (its infinities describe the overflow, not the gradient, and its
finite values would make a layer's first value come from another step than its neighbour's);
a non-finite loss is a divergence whatever the scale.
"""

import math
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from gradexp.network import Network
from gradexp.scaled_norms import Layout, norms, total

FLUSH_SECONDS = 1.0  # how often measurements are copied to the host, written and checked


@dataclass
class StepRecord:
    """What the sinks receive for one step: scalar tags (TensorBoard names) to values, histogram
    tags to `histogram_stats` rows, and vectors (a value per time step, say) by tag."""

    step: int
    scalars: dict[str, float] = field(default_factory=dict)
    histograms: dict[str, list[float]] = field(default_factory=dict)
    vectors: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class Divergence:
    step: int
    first_nonfinite_layer: str | None  # None when only the loss went non-finite


class GradientRecorder:
    """Measures the gradient after each backward pass; hands logged steps to the sinks at flush.

    Parameters are ordered with the recorded layers' weight matrices first, input to output,
    then every other parameter (biases, norm scales), which count towards the total norm. A
    block's norm is the norm over its parameters, derived at flush from the same per-parameter
    norms: it costs the training step nothing.
    """

    def __init__(
        self, network: Network, log_every: int, last_step: int, clipping: bool, scaling: bool = False
    ):
        self.layer_names = network.layer_names
        self.param_names, self.params = network.param_names, network.params
        self.block_names = [block.name for block in network.blocks]
        self._membership = _membership(network) if network.blocks else None
        self.log_every, self.last_step, self.clipping, self.scaling = log_every, last_step, clipping, scaling
        # (step, lr, loss, per-parameter norms, total after clipping or None, loss scale or None)
        self._rows: list[tuple[int, float, Tensor, Tensor, Tensor | None, Tensor | None]] = []
        # (step, StepRecord field, tags, one device tensor with a row per tag)
        self._extras: list[tuple[int, str, list[str], Tensor]] = []
        self._last_flush = time.monotonic()
        self.divergence: Divergence | None = None
        self.steps_seen = self.clipped_steps = 0  # clipping statistics over every step, logged or not
        self.skipped_steps = self.skipped_in_a_row = 0  # steps the loss scale skipped (an overflow)
        self.scale_last: float | None = None  # the loss scale of the last step
        self.gradient_prefixes = {"grad_norm", "block_grad_norm"}  # tags a skipped step drops
        # the measured gradients still carry the loss scale (a user's loop measured before its
        # GradScaler unscales them): the norms are divided by each step's scale at flush
        self.scaled_gradients = False
        self.first_values: dict[str, float] = {}  # every scalar tag's first and last recorded value
        self.last_values: dict[str, float] = {}
        self._first_steps: dict[str, int] = {}  # tag -> steps of its first and last value
        self._last_steps: dict[str, int] = {}
        self._norm_tags = [f"grad_norm/{n}" for n in self.layer_names]
        self._block_tags = [f"block_grad_norm/{n}" for n in self.block_names]
        self.norm_history: list[tuple[int, list[float]]] = []  # (step, layer norms) per logged step
        self.vector_history: dict[str, list[tuple[int, list[float]]]] = {}
        self._zero: Tensor | None = None
        self._unlogged: tuple | None = None  # the last step seen and not logged, for flush(final=True)
        self._layout = Layout.of(self.params)  # a gradient has its parameter's shape and dtype

    def measure(self) -> None:
        """Measure every parameter's gradient norm with one batched kernel; call after backward."""
        self._norms = norms(self._grads(), self._layout)

    def _no_grad(self, p: Tensor) -> Tensor:
        """A parameter the loss did not reach has a zero gradient (one cached zero per device)."""
        if self._zero is None or self._zero.device != p.device:
            self._zero = torch.zeros((), device=p.device)
        return self._zero

    def current_total(self) -> Tensor:
        """The total norm of the gradients as they are now (after a loop's clipping), leaving the
        measured per-parameter norms as they were."""
        return total(norms(self._grads(), self._layout))

    def _grads(self) -> list[Tensor]:
        return [p.grad if p.grad is not None else self._no_grad(p) for p in self.params]

    def total_norm(self) -> Tensor:
        """The total norm of the last measured gradient (what clipping compares to max_norm)."""
        return total(self._norms)

    def record_step(
        self, step: int, loss: Tensor, lr: float, clipped_total: Tensor | None, scale: Tensor | None = None
    ) -> None:
        """Keep references to this step's measurements; all arithmetic on them waits for flush.
        `scale`: the loss scale the step's backward used, when there is one."""
        self._rows.append((step, lr, loss.detach(), self._norms, clipped_total, scale))

    def record_scalars(self, step: int, tags: list[str], values: Tensor) -> None:
        """Scalars measured at `step` (validation, diagnostics): one device tensor, a value per
        tag, so that a step with a hundred signals costs one tensor and one copy at flush."""
        self._extras.append((step, "scalars", tags, values))

    def record_histograms(self, step: int, tags: list[str], stats: Tensor) -> None:
        self._extras.append((step, "histograms", tags, stats))

    def record_vectors(self, step: int, tags: list[str], vectors: Tensor) -> None:
        self._extras.append((step, "vectors", tags, vectors))

    def due(self) -> bool:
        return time.monotonic() - self._last_flush >= FLUSH_SECONDS

    def flush(self, final: bool = False) -> list[StepRecord]:
        """Copy pending measurements to the host (the only sync), find a divergence, and return
        the records to write: logged steps up to and including the first non-finite one.
        `final`: the run ends here, so its last step is logged too (a loop whose last step the
        recorder was not told in advance: gradexp.watch)."""
        self._last_flush = time.monotonic()
        records: dict[int, StepRecord] = {}
        skipped: set[int] = set()
        if self._rows:
            for (step, lr, *_), values, finite_gradient in zip(self._rows, *self._table()):
                if self.divergence is not None:
                    break
                skip = self.scaling and math.isfinite(values[0]) and not finite_gradient
                bad = not math.isfinite(values[0]) or not (finite_gradient or skip)
                self._count(values, skip)
                if skip:
                    skipped.add(step)
                if step % self.log_every == 0 or step == self.last_step or bad:
                    records[step] = self._step_record(step, lr, values, skip)
                    self._unlogged = None
                else:
                    self._unlogged = (step, lr, values, skip)
                if bad:
                    self._diverge(step, values)
        for step, kind, tags, values in self._extras:
            if self.divergence is None or step <= self.divergence.step:
                pairs = zip(tags, values.cpu().tolist())
                if step in skipped and kind == "scalars":
                    pairs = [(t, v) for t, v in pairs if not self._of_gradient(t)]
                getattr(records.setdefault(step, StepRecord(step)), kind).update(pairs)
        self._rows, self._extras = [], []
        if final and self._unlogged is not None and self.divergence is None:
            step, lr, values, skip = self._unlogged
            record = records.setdefault(step, StepRecord(step))
            record.scalars = {**self._step_record(step, lr, values, skip).scalars, **record.scalars}
            self._unlogged = None
        ordered = [records[s] for s in sorted(records)]
        self._remember(ordered)
        return ordered

    def clip_fraction(self) -> float | None:
        """The share of applied steps (not skipped by a loss scale) that clipping changed."""
        applied = self.steps_seen - self.skipped_steps
        return self.clipped_steps / applied if self.clipping and applied else None

    def _of_gradient(self, tag: str) -> bool:
        return tag.split("/", 1)[0] in self.gradient_prefixes

    def _count(self, values: list[float], skip: bool) -> None:
        """Clipping and loss-scale statistics over every step, logged or not."""
        self.steps_seen += 1
        if self.scaling:
            self.scale_last = values[-1]
            self.skipped_steps += skip
            self.skipped_in_a_row = self.skipped_in_a_row + 1 if skip else 0
        if not skip:
            self.clipped_steps += self.clipping and values[2] < values[1] * (1 - 1e-6)

    @property
    def value_steps(self) -> dict[str, tuple[int, int]]:
        """tag -> steps of its first and last recorded value."""
        return {tag: (first, self._last_steps[tag]) for tag, first in self._first_steps.items()}

    def _remember(self, records: list[StepRecord]) -> None:
        """Keep what the summary and the figures need once the sinks have written the rest (in
        dict operations over each step's tags: a step of every signal has hundreds)."""
        for record in records:
            scalars = record.scalars
            if not scalars.keys() <= self.first_values.keys():  # tags seen for the first time
                for tag, value in scalars.items():
                    if tag not in self.first_values:
                        self.first_values[tag], self._first_steps[tag] = value, record.step
            self.last_values.update(scalars)
            self._last_steps.update(dict.fromkeys(scalars, record.step))
            norms = list(map(scalars.get, self._norm_tags))
            if norms and None not in norms:  # a step with the gradient measured (not skipped)
                self.norm_history.append((record.step, norms))
            for tag, vector in record.vectors.items():
                self.vector_history.setdefault(tag, []).append((record.step, vector))

    def _table(self) -> tuple[list[list[float]], list[bool]]:
        """Pending steps as host rows: [loss, total norm, total after clipping, *norms, *block
        norms, loss scale (when scaling)]; and per row, whether all but its loss are finite."""
        norms = torch.stack([norms for _, _, _, norms, _, _ in self._rows]).double()
        scales = torch.stack([scale for *_, scale in self._rows]).double()[:, None] if self.scaling else None
        if self.scaled_gradients:
            norms = norms / scales
        losses = torch.stack([loss for _, _, loss, *_ in self._rows]).double()
        totals = torch.linalg.vector_norm(norms, dim=1)
        clipped = torch.stack([c for *_, c, _ in self._rows]).double() if self.clipping else totals
        parts = [torch.stack([losses, totals, clipped], dim=1), norms]
        if self._membership is not None:
            if self._membership.device != norms.device:
                self._membership = self._membership.to(norms.device)
            parts.append((norms.square() @ self._membership).sqrt())
        if self.scaling:
            parts.append(scales)
        table = torch.cat(parts, dim=1).cpu()  # one copy to the host
        return table.tolist(), torch.isfinite(table[:, 1:]).all(dim=1).tolist()

    def _step_record(self, step: int, lr: float, values: list[float], skip: bool) -> StepRecord:
        loss, total, clipped_total = values[:3]
        gradient = {"grad_norm/total": total}
        if self.clipping and not skip:
            gradient["grad_norm/total_clipped"] = clipped_total
            gradient["clip/clipped"] = float(clipped_total < total * (1 - 1e-6))
        layer_norms = values[3 : 3 + len(self.layer_names)]
        gradient.update(zip(self._norm_tags, layer_norms))
        start = 3 + len(self.params)
        gradient.update(zip(self._block_tags, values[start : start + len(self.block_names)]))
        scalars = {"loss/train": loss, "lr": float(lr), **({} if skip else gradient)}
        if self.clipping:
            scalars["clip/fraction"] = self.clip_fraction() or 0.0
        if self.scaling:
            scalars["amp/scale"] = values[-1]
            scalars["amp/skipped"] = float(self.skipped_steps)
        return StepRecord(step, scalars)

    def _diverge(self, step: int, values: list[float]) -> None:
        norms = values[3 : 3 + len(self.params)]
        culprit = next((n for n, v in zip(self.param_names, norms) if not math.isfinite(v)), None)
        self.divergence = Divergence(step, culprit)

    def state_dict(self) -> dict:
        """What a checkpoint keeps (after a flush: nothing is pending then)."""
        return {
            "steps_seen": self.steps_seen,
            "clipped_steps": self.clipped_steps,
            "skipped_steps": self.skipped_steps,
            "skipped_in_a_row": self.skipped_in_a_row,
            "scale_last": self.scale_last,
            "first_values": self.first_values,
            "last_values": self.last_values,
            "value_steps": self.value_steps,
            "norm_history": self.norm_history,
            "vector_history": self.vector_history,
        }

    def load_state_dict(self, state: dict) -> None:
        self.steps_seen, self.clipped_steps = state["steps_seen"], state["clipped_steps"]
        self.skipped_steps, self.skipped_in_a_row = state["skipped_steps"], state["skipped_in_a_row"]
        self.scale_last = state["scale_last"]
        self.first_values, self.last_values = dict(state["first_values"]), dict(state["last_values"])
        self._first_steps = {tag: steps[0] for tag, steps in state["value_steps"].items()}
        self._last_steps = {tag: steps[1] for tag, steps in state["value_steps"].items()}
        self.norm_history = [(step, list(norms)) for step, norms in state["norm_history"]]
        self.vector_history = {
            tag: [(step, list(v)) for step, v in history] for tag, history in state["vector_history"].items()
        }

    def logged_norms(self, which: int) -> tuple[int | None, dict[str, float]]:
        """(step, layer -> gradient norm) of the first (0) or last (-1) logged step."""
        if not self.norm_history:
            return None, {}
        step, norms = self.norm_history[which]
        return step, dict(zip(self.layer_names, norms))


def _membership(network: Network) -> Tensor:
    """params x blocks, 1 where the parameter is in the block: squared norms times this matrix
    are the blocks' squared norms, for every pending step in one product."""
    index = {id(p): i for i, p in enumerate(network.params)}
    matrix = torch.zeros(len(network.params), len(network.blocks), dtype=torch.float64)
    for j, block in enumerate(network.blocks):
        for p in block.params:
            if id(p) in index:
                matrix[index[id(p)], j] = 1.0
    return matrix
