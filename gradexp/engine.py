"""Train one configured experiment end to end: build, train, record, summarize.

Data flows one way: validated config -> task, model, optimizer -> training loop -> recorder ->
sinks (TensorBoard, terminal) and summary.json. `train` returns the summary, so tests and sweeps
call it directly; the CLI is a thin wrapper around it.
"""

import logging
import os
import time
import warnings
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn

from gradexp import checkpoint, outcome
from gradexp.clipping import clip_gradients
from gradexp.config.errors import ConfigError
from gradexp.config.schema import RunConfig
from gradexp.config.validate import EVAL_CHUNK, validate
from gradexp.device import resolve_device
from gradexp.diagnostics import report
from gradexp.diagnostics.monitor import Diagnostics
from gradexp.measurements.catalog import charts
from gradexp.models import MODELS, build_model, describe
from gradexp.network import Network, discover
from gradexp.optim import OPTIMIZERS, SCHEDULERS
from gradexp.precision import Precision, run_problem
from gradexp.recorder import GradientRecorder
from gradexp.sinks.base import Sink
from gradexp.sinks.console import ConsoleSink, report_text
from gradexp.sinks.summary import write_json_atomic
from gradexp.sinks.tensorboard import TensorBoardSink
from gradexp.stopping import RunStopped, StopRequest, stop_requests
from gradexp.tasks import Task, build_task

log = logging.getLogger(__name__)
DEFAULT_THREADS = torch.get_num_threads()  # this process's default, before any run changed it


class Batches:
    """Shuffled mini-batches, epoch after epoch, dropping each epoch's incomplete tail. The order
    comes from a CPU generator so it is the same on every device; one index copy per epoch."""

    def __init__(self, task: Task, batch_size: int, seed: int):
        self.task, self.batch_size = task, batch_size
        self._generator = torch.Generator().manual_seed(seed + 1)
        self._order, self._pos = None, 0

    def next(self) -> tuple[Tensor, Tensor]:
        n = self.task.x_train.shape[0]
        if self._order is None or self._pos + self.batch_size > n:
            order = torch.randperm(n, generator=self._generator)
            self._order, self._pos = order.to(self.task.x_train.device, non_blocking=True), 0
        idx = self._order[self._pos : self._pos + self.batch_size]
        self._pos += self.batch_size
        return self.task.x_train[idx], self.task.y_train[idx]

    def state_dict(self) -> dict:
        order = None if self._order is None else self._order.cpu()
        return {"generator": self._generator.get_state(), "order": order, "pos": self._pos}

    def load_state_dict(self, state: dict) -> None:
        self._generator.set_state(state["generator"])
        order = state["order"]
        self._order = None if order is None else order.to(self.task.x_train.device)
        self._pos = state["pos"]


@dataclass
class Run:
    config: RunConfig
    run_dir: Path
    device: torch.device
    task: Task
    model: nn.Module
    network: Network
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    precision: Precision  # autocast and the loss scale
    batches: Batches
    recorder: GradientRecorder
    sinks: list[Sink]  # TensorBoard, and the terminal when it shows progress
    started: float
    diagnostics: Diagnostics | None
    prediction: dict = field(default_factory=dict)  # the mean-field theory, for the network as built
    steps_completed: int = 0  # optimizer updates applied
    identity: dict = field(default_factory=dict)  # the resolved config, which a checkpoint must match

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        if self.task.classification:  # a prediction per example, or per position of a sequence
            return F.cross_entropy(output.flatten(0, -2), target.flatten())
        return F.mse_loss(output, target)


def train(
    cfg: DictConfig,
    run_dir: str | Path,
    show_progress: bool = True,
    overrides: list[str] | None = None,
    threads: int | None = None,
) -> dict:
    """Train the experiment `cfg` describes, writing its records into `run_dir`; return the
    summary (also written to run_dir/summary.json). A divergence is a result, not an error;
    an invalid config, an exception or Ctrl-C still leaves the summary and the events recorded
    so far. The first Ctrl-C or SIGTERM stops the run at the end of its current step, a second
    one at once; either way it raises `RunStopped` once the summary is written. `overrides` (as
    typed on the command line) become the run's HParams columns; `threads` is the torch thread
    count when trainer.threads does not set one."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    log.info("run directory %s", run_dir)
    started = time.perf_counter()
    run, status, error = None, "completed", None
    with stop_requests() as stop:
        try:
            config = validate(cfg)
            run = build_run(config, run_dir, show_progress, started, threads)
            run.identity = checkpoint.identity(cfg)
            if config.trainer.resume is not None:
                checkpoint.resume_run(run, Path(config.trainer.resume))
            _train_loop(run, stop)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM (RunStopped)
            status = "interrupted"
            raise
        except ConfigError as exc:
            status, error = "failed", f"invalid config: {exc}"
            raise
        except Exception as exc:
            if stop.forced is not None:  # a second signal that the code it cut short turned into
                status = "interrupted"  # its own error (torch.save's zip writer: "unexpected pos")
                raise RunStopped(stop.forced) from exc
            status, error = "failed", f"{type(exc).__name__}: {exc}"
            raise
        finally:
            stop.defer()
            summary = _finish(run, cfg, run_dir, started, status, error, overrides or [])
    return summary


def build_run(
    config: RunConfig, run_dir: Path, show_progress: bool, started: float, threads: int | None
) -> Run:
    """Build everything a run needs. Whatever an earlier run in this process changed (the seed,
    the thread count, CUDA's peak-memory counter) is set afresh, so jobs of a sweep run in one
    process give the numbers they would give alone."""
    t = config.trainer
    device = resolve_device(t.device)
    torch.set_num_threads(t.threads or threads or DEFAULT_THREADS)
    _set_determinism(t.deterministic, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(t.seed)
    task = build_task(config.task, t.seed).to(device)
    n_train = task.x_train.shape[0]
    if t.batch_size > n_train:  # task=custom: its size is known now
        raise ConfigError(
            "trainer.batch_size",
            t.batch_size,
            f"the training data has {n_train} examples",
            f"an integer <= {n_train}",
        )
    model = build_model(config, task).to(device)
    precision = Precision(t.precision, t.loss_scale, device)
    problem = run_problem(precision, model, device)
    if problem is not None:
        raise ConfigError(*problem)
    with precision.autocast():  # the layers of the model as it trains
        network = discover(model, task.x_train[:2])
    optimizer = OPTIMIZERS[config.optimizer.name](model.parameters(), config.optimizer)
    scheduler = SCHEDULERS[config.scheduler.name](optimizer, config.scheduler, t.steps)
    clipping = t.clip.max_norm is not None or t.clip.value is not None
    recorder = GradientRecorder(network, t.log_every, t.steps - 1, clipping, precision.scaling)
    diagnostics = (
        Diagnostics(config.diagnostics, network, recorder, t.steps - 1, t.grad_accum, t.precision)
        if config.diagnostics.every is not None or config.diagnostics.histograms_every is not None
        else None
    )
    restart = t.resume is None and any(run_dir.glob("events.out.tfevents.*"))
    sinks: list[Sink] = [
        TensorBoardSink(run_dir, charts(network, diagnostics.signals() if diagnostics else []), restart)
    ]
    if show_progress:
        sinks.append(ConsoleSink(t.steps, str(run_dir)))
    run = Run(
        config,
        run_dir,
        device,
        task,
        model,
        network,
        optimizer,
        scheduler,
        precision,
        Batches(task, t.batch_size, t.seed),
        recorder,
        sinks,
        started,
        diagnostics,
        report.predict(config, model),
    )
    params = sum(p.numel() for p in run.model.parameters())
    for sink in sinks:
        sink.start(f"[bold]gradexp[/] {describe(config, run.device, params)}")
    return run


def _set_determinism(on: bool, device: torch.device) -> None:
    """PyTorch's deterministic algorithms, on or off for every run (so an earlier job's setting
    never carries over). On CUDA, cuBLAS also needs a fixed workspace, set before its first use."""
    if on and device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(on)
    torch.backends.cudnn.deterministic = on
    torch.backends.cudnn.benchmark = False


def _train_loop(run: Run, stop: StopRequest) -> None:
    """The steps, from a resumed run's checkpoint on; a stop request (Ctrl-C, SIGTERM) ends the
    loop between two steps, with a checkpoint."""
    t = run.config.trainer
    for step in range(run.steps_completed, t.steps):
        if not train_step(run, step):
            return
        every = t.checkpoint_every
        if stop.signum is not None or (every is not None and run.steps_completed % every == 0):
            _write(run, run.recorder.flush())  # a checkpoint keeps nothing pending
            if run.recorder.divergence is not None:
                return
            checkpoint.save_run(run)
        stop.check()


def train_step(run: Run, step: int) -> bool:
    """One optimizer update with everything recorded around it (validation, gradient norms,
    clipping, the diagnostics when due) and, about once a second, the flush to the sinks.
    False once a flush has found a divergence."""
    t = run.config.trainer
    if step % t.eval_every == 0:
        _record_metrics(run, step, evaluate(run, "val"))
    diagnose = run.diagnostics is not None and run.diagnostics.due(step)
    run.optimizer.zero_grad(set_to_none=True)
    loss, batch = _forward_backward(run, run.diagnostics.watch() if diagnose else nullcontext())
    run.precision.unscale(run.optimizer)  # everything below sees the true gradient
    run.recorder.measure()
    clipping = run.recorder.clipping
    clipped = clip_gradients(run.recorder.params, run.recorder.total_norm(), t.clip) if clipping else None
    scale = run.precision.current_scale()
    run.recorder.record_step(step, loss, run.scheduler.get_last_lr()[0], clipped, scale)
    if diagnose:
        run.diagnostics.before_update(step, batch, run.loss, scale)
    run.precision.step(run.optimizer)
    with warnings.catch_warnings():  # a step the loss scale skipped is no misordered scheduler
        warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step", UserWarning)
        run.scheduler.step()
    if diagnose:
        run.diagnostics.after_update()
    run.steps_completed = step + 1
    if run.recorder.due():
        _write(run, run.recorder.flush())
    return run.recorder.divergence is None


def _forward_backward(run: Run, watch: AbstractContextManager) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """Accumulate the gradient of the mean loss over grad_accum micro-batches; return that loss
    and the first micro-batch, the one `watch` (the diagnostics' hooks) observes. The forward
    pass runs under the precision's autocast, the backward on the scaled loss."""
    accum = run.config.trainer.grad_accum
    losses, first = [], None
    for i in range(accum):
        x, y = run.batches.next()
        with watch if i == 0 else nullcontext():
            with run.precision.autocast():
                loss = run.loss(run.model(x), y)
            run.precision.scale(loss / accum if accum > 1 else loss).backward()
        losses.append(loss.detach())
        first = first or (x, y)
    return (losses[0] if accum == 1 else torch.stack(losses).mean()), first


@torch.no_grad()
def evaluate(run: Run, split: str) -> dict[str, Tensor]:
    """Loss (and accuracy) of the current model in eval mode, on the validation split or as many
    training examples, as device tensors: reading them would sync, so the recorder reads them at
    its next flush."""
    x, y = getattr(run.task, f"x_{split}"), getattr(run.task, f"y_{split}")
    n = run.task.x_val.shape[0]  # the train loss is measured on as many examples as the val loss
    x, y = x[:n], y[:n]
    run.model.eval()
    with run.precision.autocast():  # the model as it trains
        output = torch.cat([run.model(chunk) for chunk in x.split(EVAL_CHUNK)])
    run.model.train()
    metrics = {f"loss/{split}": run.loss(output.float(), y)}
    if run.task.classification:
        metrics[f"acc/{split}"] = (output.argmax(dim=-1) == y).float().mean()
    return metrics


def _record_metrics(run: Run, step: int, metrics: dict[str, Tensor]) -> None:
    run.recorder.record_scalars(step, list(metrics), torch.stack(list(metrics.values())))


def _write(run: Run, records) -> None:
    for sink in run.sinks:
        sink.write(records)


def _finish(
    run: Run | None,
    cfg: DictConfig,
    run_dir: Path,
    started: float,
    status: str,
    error: str | None,
    overrides: list[str],
) -> dict:
    """Close the run and write its summary; runs whatever happened, even when the run failed
    while being set up (run is None), so no measurement is lost."""
    final = {}
    if run is not None:
        status, final = _close(run, status)
    summary = _summary(run, cfg, status, error, final, started, overrides)
    write_json_atomic(run_dir / "summary.json", summary)
    if run is not None and run.device.type == "cuda":
        torch.cuda.empty_cache()  # the next job of a sweep starts from an empty cache
    log.info("status %s after %d steps\n%s", status, summary["steps_completed"], report_text(summary))
    # a run that failed before it had an event file still gets its HParams row
    for sink in run.sinks if run is not None else [TensorBoardSink(run_dir)]:
        try:
            sink.finish(summary)
        except OSError as exc:  # the summary is written; a full disk must not hide the run's own error
            log.warning("could not finish the %s: %s", type(sink).__name__, exc)
    return summary


def _close(run: Run, status: str) -> tuple[str, dict[str, float]]:
    """Flush what was measured, evaluate a completed run and draw the figures; return the final
    status (a divergence found by the last flush counts) and the final metrics."""
    recorder = run.recorder
    _write(run, recorder.flush())
    if recorder.divergence is not None and status != "failed":
        status = "diverged"
    final = {}
    if status == "completed":
        val = evaluate(run, "val")
        _record_metrics(run, run.config.trainer.steps, val)
        final = {**val, **evaluate(run, "train")}
        _write(run, recorder.flush())
        final = {k: v.item() for k, v in final.items()}
    if run.config.diagnostics.figures:
        outcome.draw_figures(recorder, run.run_dir, run.sinks)
    return status, final


def _summary(
    run: Run | None,
    cfg: DictConfig,
    status: str,
    error: str | None,
    final: dict[str, float],
    started: float,
    overrides: list[str],
) -> dict:
    common = dict(status=status, error=error, started=started, overrides=overrides, final=final)
    common["config"] = checkpoint.as_container(cfg)
    if run is None:  # it failed while being set up
        return outcome.summary(recorder=None, network=None, steps_completed=0, device=None, **common)
    return outcome.summary(
        recorder=run.recorder,
        network=run.network,
        steps_completed=run.steps_completed,
        device=run.device,
        depth_axis=MODELS[run.config.model.name].depth_axis,
        loss_floor=run.task.loss_floor,
        precision=(run.precision.name, run.precision.loss_scale),
        deterministic=run.config.trainer.deterministic,
        prediction=run.prediction,
        not_measured=run.diagnostics.not_applicable if run.diagnostics else {},
        **common,
    )
