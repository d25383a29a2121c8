"""`gradexp.watch`: what a gradexp run records, in a user's own training loop, for one added line
per step (`monitor.step(loss)`, right after backward).

Where each thing is measured:
- at the model's first forward pass with gradients, the network is found (`network.discover`
  on that call's own inputs, traced so that nothing the training sees changes);
- in `monitor.step(loss)`, the per-layer gradient norms and the diagnostics that read the
  gradient, before the loop's clipping (with a GradScaler: divided by its scale at flush, since
  the loop unscales later and only once);
- in the optimizer's step pre-hook, the gradient the optimizer is given: measured again only
  in a loop that changed it since (clipping, unscaling: the gradients' version counters say so,
  without reading them); in its post-hook, the update (update ratios).

Nothing is read on the host until a flush, about once a second, as in gradexp's own loop, so
`monitor.diverged` is set at the flush that finds a non-finite loss or gradient. Under
DistributedDataParallel only rank 0 records; backward has synchronized the gradient by then.
"""

import atexit
import sys
import time
import weakref
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime
from pathlib import Path

import torch
from torch import Tensor, nn

from gradexp import distributed, outcome
from gradexp.config.errors import ConfigError
from gradexp.config.schema import DiagnosticsConfig
from gradexp.diagnostics.monitor import Diagnostics
from gradexp.diagnostics.theory import no_prediction
from gradexp.measurements.catalog import charts
from gradexp.network import Network, Tracer, discover
from gradexp.recorder import Divergence, GradientRecorder
from gradexp.sinks.console import run_report
from gradexp.sinks.layout import make_console
from gradexp.sinks.summary import write_json_atomic
from gradexp.sinks.tensorboard import TensorBoardSink


class Diverged(RuntimeError):
    """Raised by `monitor.step` (with raise_on_divergence=True) once a flush has found a
    non-finite loss or gradient."""

    def __init__(self, divergence: Divergence):
        self.divergence = divergence
        where = divergence.first_nonfinite_layer or "the loss"
        super().__init__(f"training diverged at step {divergence.step}: first non-finite value in {where}")


def watch(model: nn.Module, optimizer: torch.optim.Optimizer, run_dir: str | Path | None = None, **options):
    """Record `model`'s gradients as `optimizer` trains it in the caller's loop; returns the
    `Monitor` (also a context manager). Options are the CLI's settings, with its defaults:
    `log_every` (10), `diagnostics_every` (50), `histograms_every` (250), `saturation_fraction`
    (0.1), `figures` (True); and `scaler` (the loop's torch.amp.GradScaler: the gradients step()
    reads still carry its scale, unless `unscaled_by_loop`), `grad_accum` (micro-batches per
    step), `raise_on_divergence`, `hparams` (a dict: the run's HParams columns), `report` (print
    the per-layer table at close). `run_dir` defaults to outputs/watch/<date>/<time>."""
    return Monitor(model, optimizer, run_dir, **options)


class Monitor:
    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        run_dir: str | Path | None = None,
        *,
        log_every: int = 10,
        diagnostics_every: int | None = 50,
        histograms_every: int | None = 250,
        saturation_fraction: float = 0.1,
        figures: bool = True,
        scaler: "torch.amp.GradScaler | None" = None,
        unscaled_by_loop: bool = False,
        grad_accum: int = 1,
        raise_on_divergence: bool = False,
        hparams: dict | None = None,
        report: bool = True,
    ):
        _check_arguments(model, optimizer, log_every, diagnostics_every, histograms_every, grad_accum)
        self.started = time.perf_counter()
        self.model, self.optimizer = model, optimizer
        self.module, self.compiled = _unwrap(model)
        self.run_dir = Path(run_dir) if run_dir is not None else _default_run_dir()
        self.log_every, self.grad_accum = log_every, grad_accum
        self.config = DiagnosticsConfig(diagnostics_every, histograms_every, saturation_fraction, figures)
        self.scaler = scaler if scaler is not None and scaler.is_enabled() else None
        # the gradients carry the scale when step() reads them, unless the loop unscaled them first
        self.scaled_gradients = self.scaler is not None and not unscaled_by_loop
        self.raise_on_divergence, self.report = raise_on_divergence, report
        self.hparams = dict(hparams or {})
        self.steps = 0  # monitor.step calls so far: the next step's number
        self.network: Network | None = None
        self.recorder: GradientRecorder | None = None
        self.diagnostics: Diagnostics | None = None
        self.sinks: list = []
        self.summary: dict | None = None  # set by close
        self.recording = distributed.current(environment=True).leader  # under DDP, rank 0 records
        self._pending: tuple | None = None  # a measured step whose optimizer update is to come
        self._capture = ExitStack()  # the diagnostics' hooks, open during a diagnostic step's pass
        self._capturing = False
        self._tracing = False  # discovery's own forward pass is running
        self._handles = []
        self._tracer: Tracer | None = None  # for a loop that never calls the model itself
        if self.recording:
            self._tracer = Tracer(self.module, with_grad_only=True)
            self._tracer.start()
            self._discovery = model.register_forward_pre_hook(self._on_forward, with_kwargs=True)
            self._handles.append(self._discovery)
            self._handles.append(optimizer.register_step_pre_hook(self._before_optimizer_step))
            self._handles.append(optimizer.register_step_post_hook(self._after_optimizer_step))
            _close_at_exit(self)

    # the user's loop calls these
    def step(self, loss: Tensor | float) -> None:
        """Measure this step's gradient; call once per optimizer step, right after backward
        (with gradient accumulation, after the last micro-batch's)."""
        if not self.recording or self.summary is not None:
            return
        if self.network is None and not self._tracer.calls:
            raise RuntimeError(
                "gradexp.watch: monitor.step() came before the model's first forward pass with "
                "gradients; call it right after loss.backward()"
            )
        if self.raise_on_divergence and self.diverged is not None:
            raise Diverged(self.diverged)
        with self._guard():
            self._measure(loss)

    def _measure(self, loss: Tensor | float) -> None:
        watched = self._capturing  # the diagnostics' hooks were open through this step's passes
        self._stop_capture()
        if self.network is None:  # the loop called submodules only: traced as it ran
            self._build(self._tracer.network())
        if self._pending is not None:  # the last step had no optimizer update (a skipped AMP step)
            self._finish_step(applied=False, open_capture=False)
        step = self.steps
        scale = self.scaler._get_scale_async().detach().clone() if self.scaler else None
        self.recorder.measure()
        grads = [weakref.ref(p.grad) if p.grad is not None else None for p in self.recorder.params]
        versions = [p.grad._version if p.grad is not None else -1 for p in self.recorder.params]
        diagnose = self.diagnostics is not None and self.diagnostics.due(step)
        if diagnose:  # the measurements that need hooks only where they were open through the pass
            self.diagnostics.before_update(
                step, None, None, scale, scaled_gradients=self.scaled_gradients, hooked=watched
            )
        if isinstance(loss, Tensor):
            loss = loss.detach().float().mean()
        else:
            loss = torch.tensor(
                float(loss), device=self.recorder.params[0].device if self.recorder.params else None
            )
        lr = self.optimizer.param_groups[0]["lr"]  # a tensor (capturable optimizers) is read at flush
        lr = lr.detach().clone() if isinstance(lr, Tensor) else float(lr)
        self._pending = [step, loss, lr, scale, diagnose, grads, versions, None]

    def log(self, metrics: dict[str, Tensor | float], step: int | None = None) -> None:
        """The loop's own scalars (`loss/val`, `acc/val`: the summary's final values), at `step`
        (default: the step last measured), kept on the device until the next flush."""
        if not self.recording or self.recorder is None or not metrics:
            return
        last = self._pending[0] if self._pending else max(self.steps - 1, 0)
        device = self.recorder.params[0].device if self.recorder.params else None
        values = [
            torch.as_tensor(v, dtype=torch.float64, device=device).detach().reshape(())
            for v in metrics.values()
        ]
        self.recorder.record_scalars(last if step is None else step, list(metrics), torch.stack(values))

    def flush(self) -> None:
        """Write what is pending now (and look for a divergence), rather than at the next
        once-a-second flush; it waits for the device."""
        if self.recording and self.recorder is not None and self.summary is None:
            self._flush()

    @property
    def diverged(self) -> Divergence | None:
        """The step and the first non-finite layer, once a flush has seen them; else None."""
        return self.recorder.divergence if self.recorder is not None else None

    def close(self, status: str = "completed", error: str | None = None) -> dict | None:
        """Write what is pending, the figures and summary.json, and remove every hook; returns
        the summary (None on a rank that does not record). A second call does nothing."""
        if not self.recording:
            return None
        if self.summary is not None:
            return self.summary
        _OPEN.discard(self)
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._stop_tracer()
        self._stop_capture()
        if self._pending is not None:
            self._finish_step(applied=False, open_capture=False)
        final = {}
        if self.recorder is not None:
            self._flush(final=True)
            if self.diverged is not None and status != "failed":
                status = "diverged"
            final = {
                k: v
                for k, v in self.recorder.last_values.items()
                if k in ("loss/train", "loss/val", "acc/val")
            }
            if self.config.figures:
                outcome.end_figures(self.recorder, self.run_dir, self.sinks)
        self.summary = self._summary(status, error, final)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.run_dir / "summary.json", self.summary)
        for sink in self.sinks or [TensorBoardSink(self.run_dir)]:
            sink.finish(self.summary)
        if self.report:
            console = make_console()
            for part in run_report(self.summary, console.width):
                console.print(part, highlight=False)
            console.print(f"files:       {self.run_dir}")
        return self.summary

    def __enter__(self) -> "Monitor":
        return self

    def __exit__(self, kind, exc, traceback) -> bool:
        self.close(*ending(exc))
        return False

    # hooks
    def _on_forward(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        """Before the model's first call with gradients (not the loop's evaluation): find the
        network by tracing that call's inputs, then open the hooks if step 0 is diagnostic."""
        if (
            self.network is not None
            or self._tracing
            or not torch.is_grad_enabled()
            or distributed.current(environment=True).size > 1
        ):
            return  # with several processes, no pass of rank 0's own: the passive trace finds it
        with self._guard():
            self._stop_tracer()
            self._tracing = True
            try:
                network = discover(self.module, args, kwargs)
            finally:
                self._tracing = False
            self._build(network)
            self._open_capture()

    def _before_optimizer_step(self, optimizer, args, kwargs) -> None:
        """The gradient the optimizer is about to apply: after the loop's clipping and unscaling,
        before an optimizer that edits .grad in place (SGD with Nesterov, foreach) has run."""
        if self._pending is not None and self._pending[-1] is None:
            with self._guard():
                self._pending[-1] = self._applied_total()

    def _after_optimizer_step(self, optimizer, args, kwargs) -> None:
        if self._pending is not None:
            with self._guard():
                self._finish_step(applied=True)

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """A failure of gradexp's own inside the loop's hooks never stops the loop: it is said
        once, on stderr, and the monitor closes as failed with what it had recorded."""
        try:
            yield
        except Exception as problem:  # noqa: BLE001 (anything: the user's training must go on)
            print(f"gradexp.watch stopped recording: {type(problem).__name__}: {problem}", file=sys.stderr)
            self._pending = None
            try:
                self.close("failed", f"{type(problem).__name__}: {problem}")
            except Exception as closing:  # noqa: BLE001
                print(f"gradexp.watch could not close {self.run_dir}: {closing}", file=sys.stderr)

    # inside
    def _stop_tracer(self) -> None:
        if self._tracer is not None:
            self._tracer.stop()
            self._tracer = None

    def _build(self, network: Network) -> None:
        """The recorder, diagnostics and TensorBoard file, once the network is known."""
        self._stop_tracer()
        self._discovery.remove()  # found: the model's later calls run without a hook of gradexp's
        self.network = network
        scaling = self.scaler is not None
        self.recorder = recorder = GradientRecorder(
            network, self.log_every, -1, clipping=True, scaling=scaling
        )
        recorder.scaled_gradients = self.scaled_gradients
        if self.config.every is not None or self.config.histograms_every is not None:
            precision = "fp16" if scaling else "32"  # a GradScaler is float16's
            self.diagnostics = Diagnostics(
                self.config,
                network,
                recorder,
                -1,
                self.grad_accum,
                precision,
                hooks=not self.compiled,
                batch=False,
            )
        signals = self.diagnostics.signals() if self.diagnostics else []
        restart = any(self.run_dir.glob("events.out.tfevents.*"))  # a script run again: its new curves alone
        self.sinks = [TensorBoardSink(self.run_dir, charts(network, signals), restart)]

    def _open_capture(self) -> None:
        """The diagnostics' hooks, from now until the next step() when that step is diagnostic:
        the capture watches the first forward pass with gradients and its backward."""
        d = self.diagnostics
        if d is not None and d.capture.needs and d.due(self.steps) and not self._capturing:
            self._capture.enter_context(d.watch())
            self._capturing = True

    def _stop_capture(self) -> None:
        if self._capturing:
            self._capture.close()
            self._capturing = False

    def _finish_step(self, applied: bool, open_capture: bool = True) -> None:
        """Record the pending step with the total norm of the gradient the optimizer used (the
        measured one unless the loop changed a gradient since: clipping, unscaling), then what
        the update did; flush when due."""
        step, loss, lr, scale, diagnose, grads, versions, used = self._pending
        if used is None:  # no pre-hook between step() and the update: a closure step (Lightning)
            used = self._applied_total() if applied else self._measured_total()
        self._pending = None
        self.recorder.record_step(step, loss, lr, used, scale)
        if diagnose:
            self.diagnostics.after_update()
        self.steps = step + 1
        if open_capture:
            self._open_capture()
        if self.recorder.due():
            self._flush()

    def _applied_total(self) -> Tensor:
        """The total norm of the gradients now: measured again only where the loop changed one
        since step() (in place, as clipping and unscaling do, or by replacing it), which the
        gradients' version counters tell without reading them. (An edit through `.grad.data`
        bypasses the counter; torch's own clipping and GradScaler do not.)"""
        _, _, _, _, _, grads, versions, _ = self._pending
        changed = any(
            p.grad is not (g() if g is not None else None) or (p.grad is not None and p.grad._version != v)
            for p, g, v in zip(self.recorder.params, grads, versions)
        )
        return self.recorder.current_total() if changed else self._measured_total()

    def _measured_total(self) -> Tensor:
        total = self.recorder.total_norm()
        return total / self._pending[3] if self.scaled_gradients else total

    def _flush(self, final: bool = False) -> None:
        records = self.recorder.flush(final)
        for sink in self.sinks:
            sink.write(records)

    def _summary(self, status: str, error: str | None, final: dict) -> dict:
        return outcome.summary(
            status=status,
            error=error,
            recorder=self.recorder,
            network=self.network,
            steps_completed=self.steps,
            started=self.started,
            device=next((p.device for p in self.module.parameters()), None),
            overrides=[f"{k}={v}" for k, v in self.hparams.items()],
            config=self.hparams,
            final=final,
            precision=(None, "dynamic" if self.scaler else None),
            deterministic=torch.are_deterministic_algorithms_enabled(),
            prediction=no_prediction("it describes gradexp's plain MLP; read the measured signals"),
            not_measured=self.diagnostics.not_applicable if self.diagnostics else {},
        )


def _check_arguments(model, optimizer, log_every, diagnostics_every, histograms_every, grad_accum) -> None:
    """A wrong argument is one line that names it, its value and what is allowed."""
    if not isinstance(model, nn.Module):
        raise ConfigError("model", type(model).__name__, "gradexp.watch needs the nn.Module being trained")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ConfigError(
            "optimizer",
            type(optimizer).__name__,
            "gradexp.watch needs the torch.optim.Optimizer that steps the model",
        )
    for key, value, optional in (
        ("log_every", log_every, False),
        ("diagnostics_every", diagnostics_every, True),
        ("histograms_every", histograms_every, True),
        ("grad_accum", grad_accum, False),
    ):
        if (value is None and not optional) or (
            value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1)
        ):
            raise ConfigError(
                key,
                value,
                "must be a whole number of steps",
                "1, 2, ..." + (" or None (off)" if optional else ""),
            )


def _unwrap(model: nn.Module) -> tuple[nn.Module, bool]:
    """The module whose layers are measured: inside DistributedDataParallel or DataParallel, and
    inside torch.compile's wrapper (then True: the diagnostics' module hooks would recompile it)."""
    compiled = False
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod") and type(model).__name__ == "OptimizedModule":
            model, compiled = model._orig_mod, True
        else:
            return model, compiled


def ending(exc: BaseException | None) -> tuple[str, str | None]:
    """The status and error a run ends with, for the exception that ended the loop (None: it
    ended normally). gradexp's own `Diverged` is no failure: close() finds the divergence."""
    if exc is None or isinstance(exc, Diverged):
        return "completed", None
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", None
    return "failed", f"{type(exc).__name__}: {exc}"


def _default_run_dir() -> Path:
    now = datetime.now()
    return Path("outputs", "watch", now.strftime("%Y-%m-%d"), now.strftime("%H-%M-%S"))


# A monitor the loop never closed is closed when the process ends: Ctrl-C, an uncaught error or
# a script that ended without close() still leave summary.json (interrupted, failed, completed).
_OPEN: "weakref.WeakSet[Monitor]" = weakref.WeakSet()
_UNCAUGHT: list[BaseException] = []
_exit_handler_installed = False  # the excepthook and the exit handler, installed once


def _close_at_exit(monitor: Monitor) -> None:
    """Note `monitor` as open; the first time, note uncaught exceptions (Python's excepthook
    runs before its exit handlers) and register the handler that closes what is still open."""
    global _exit_handler_installed
    if not _exit_handler_installed:
        previous = sys.excepthook

        def note_uncaught(kind, value, traceback):
            _UNCAUGHT.append(value)
            previous(kind, value, traceback)

        sys.excepthook = note_uncaught
        atexit.register(_close_open_monitors)
        _exit_handler_installed = True
    _OPEN.add(monitor)


def _close_open_monitors() -> None:
    status, error = ending(_UNCAUGHT[-1] if _UNCAUGHT else None)
    for monitor in list(_OPEN):
        try:
            monitor.close(status, error)
        except Exception as problem:  # the process is ending: say so, and close the others
            print(f"gradexp.watch: could not close {monitor.run_dir}: {problem}", file=sys.stderr)
