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

from gradexp import checkpoint, distributed, outcome
from gradexp.batches import Batches, StreamedBatches
from gradexp.clipping import clip_gradients
from gradexp.config.errors import ConfigError
from gradexp.config.schema import RunConfig
from gradexp.config.validate import EVAL_CHUNK, validate
from gradexp.device import resolve_device
from gradexp.diagnostics import report
from gradexp.diagnostics.monitor import Diagnostics
from gradexp.distributed import Group, Pace
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


@dataclass
class Run:
    config: RunConfig
    run_dir: Path
    device: torch.device
    task: Task
    model: nn.Module
    trained: nn.Module  # what the step calls: the model, or its DistributedDataParallel wrapper
    network: Network
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    precision: Precision  # autocast and the loss scale
    batches: Batches | StreamedBatches  # the data in memory, or streamed (trainer.workers)
    recorder: GradientRecorder
    sinks: list[Sink]  # TensorBoard, and the terminal when it shows progress
    started: float
    diagnostics: Diagnostics | None
    group: Group  # the processes that train this run together (one, unless started by torchrun)
    pace: Pace  # when the run flushes, and where it stops
    prediction: dict = field(default_factory=dict)  # the mean-field theory, for the network as built
    steps_completed: int = 0  # optimizer updates applied
    identity: dict = field(default_factory=dict)  # the resolved config, which a checkpoint must match
    figures_now: bool = True  # draw the end-of-run figures, or leave them to gradexp-report (a sweep's job)

    def loss(self, output: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
        if self.task.classification:  # a prediction per example, or per position of a sequence
            return F.cross_entropy(output.flatten(0, -2), target.flatten(), reduction=reduction)
        return F.mse_loss(output, target, reduction=reduction)


def train(
    cfg: DictConfig,
    run_dir: str | Path,
    show_progress: bool = True,
    overrides: list[str] | None = None,
    threads: int | None = None,
    figures_now: bool = True,
) -> dict:
    """Train the experiment `cfg` describes, writing its records into `run_dir`; return the
    summary (also written to run_dir/summary.json). A divergence is a result, not an error;
    an invalid config, an exception or Ctrl-C still leaves the summary and the events recorded
    so far. The first Ctrl-C or SIGTERM stops the run at the end of its current step, a second
    one at once; either way it raises `RunStopped` once the summary is written. `overrides` (as
    typed on the command line) become the run's HParams columns; `threads` is the torch thread
    count when trainer.threads does not set one; `figures_now=False` leaves the end-of-run
    figures for `gradexp-report` to draw (what they are drawn from is saved). In a process group
    (torchrun), the processes train the run together; rank 0 writes, and a signal stops them
    all at the next flush."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    log.info("run directory %s", run_dir)
    if distributed.current(environment=True).leader:
        outcome.forget_figure_data(run_dir)
    started = time.perf_counter()
    run, status, error = None, "completed", None
    with stop_requests() as stop:
        try:
            config = validate(cfg)
            run = build_run(config, run_dir, show_progress, started, threads)
            run.identity = checkpoint.identity(cfg)
            run.figures_now = figures_now
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
    group = distributed.current()
    device = _device(t.device, group)
    torch.set_num_threads(t.threads or threads or DEFAULT_THREADS)
    _set_determinism(t.deterministic, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(t.seed)
    task = build_task(config.task, t.seed, t.workers).to(device)
    _check_batch_size(t.batch_size, task.n_train, group)
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
    diagnosing = config.diagnostics.every is not None or config.diagnostics.histograms_every is not None
    diagnostics = (  # rank 0's share of the batch stands for the batch, as the first micro-batch does
        Diagnostics(config.diagnostics, network, recorder, t.steps - 1, t.grad_accum, t.precision)
        if diagnosing and group.leader
        else None
    )
    sinks: list[Sink] = []
    if group.leader:
        restart = t.resume is None and any(run_dir.glob("events.out.tfevents.*"))
        signals = diagnostics.signals() if diagnostics else []
        sinks.append(TensorBoardSink(run_dir, charts(network, signals), restart))
        if show_progress:
            sinks.append(ConsoleSink(t.steps, str(run_dir)))
    run = Run(
        config=config,
        run_dir=run_dir,
        device=device,
        task=task,
        model=model,
        trained=_replicated(model, device, group),
        network=network,
        optimizer=optimizer,
        scheduler=scheduler,
        precision=precision,
        batches=(
            StreamedBatches(task.streamed, t.batch_size, t.seed, group, device)
            if task.streamed
            else Batches(task, t.batch_size, t.seed, group)
        ),
        recorder=recorder,
        sinks=sinks,
        started=started,
        diagnostics=diagnostics,
        group=group,
        pace=Pace(recorder, group, device),
        prediction=report.predict(config, model),
    )
    params = sum(p.numel() for p in run.model.parameters())
    where = run.device if group.size == 1 else f"{group.size} processes ({device.type})"
    for sink in sinks:
        sink.start(f"[bold]gradexp[/] {describe(config, where, params)}")
    return run


def _check_batch_size(batch_size: int, n_train: int, group: Group) -> None:
    """What can only be checked once the data is there (task=custom's size) and the processes
    are known (torchrun's)."""
    if batch_size > n_train:
        problem, allowed = f"the training data has {n_train} examples", f"an integer <= {n_train}"
    elif batch_size % group.size:
        problem = f"each of the {group.size} processes takes an equal share of a batch"
        allowed = f"a multiple of {group.size}"
    else:
        return
    raise ConfigError("trainer.batch_size", batch_size, problem, allowed)


def _device(spec: str, group: Group) -> torch.device:
    """The run's device; with several processes on CUDA, each takes the GPU of its local rank."""
    device = resolve_device(spec)
    if group.size == 1 or device.type != "cuda":
        return device
    if spec not in ("auto", "cuda"):
        raise ConfigError(
            "trainer.device",
            spec,
            f"each of the {group.size} processes takes the GPU of its local rank",
            "cuda, auto or cpu",
        )
    torch.cuda.set_device(group.local_rank)
    return torch.device("cuda", group.local_rank)


def _replicated(model: nn.Module, device: torch.device, group: Group) -> nn.Module:
    """The model as the step calls it: with several processes, wrapped in DistributedDataParallel,
    whose backward averages the gradients over the processes (a BatchNorm layer normalizes over
    each process's share of the batch, as DDP's does)."""
    if group.size == 1:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def _set_determinism(on: bool, device: torch.device) -> None:
    """PyTorch's deterministic algorithms, on or off for every run (so an earlier job's setting
    never carries over). On CUDA, cuBLAS also needs a fixed workspace, set before its first use.
    The switch is only thrown when it changes: its first call imports TorchInductor's config
    (about a second), which a run that stays non-deterministic never needs."""
    if on and device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    if torch.are_deterministic_algorithms_enabled() != on or warn_only:
        torch.use_deterministic_algorithms(on)
    torch.backends.cudnn.deterministic = on
    torch.backends.cudnn.benchmark = False


def _train_loop(run: Run, stop: StopRequest) -> None:
    """The steps, from a resumed run's checkpoint on; a stop request (Ctrl-C, SIGTERM) ends the
    loop between two steps (with several processes: at the next flush), with a checkpoint."""
    t = run.config.trainer
    run.pace.stop = stop
    for step in range(run.steps_completed, t.steps):
        if not train_step(run, step):
            return
        every = t.checkpoint_every
        if run.pace.stopping() or (every is not None and run.steps_completed % every == 0):
            _flush(run, step)  # a checkpoint keeps nothing pending
            if run.pace.diverged:
                return
            if run.group.leader:
                checkpoint.save_run(run)
        run.pace.check()


def train_step(run: Run, step: int) -> bool:
    """One optimizer update with everything recorded around it (validation, gradient norms,
    clipping, the diagnostics when due) and, about once a second, the flush to the sinks.
    False once a flush has found a divergence."""
    t = run.config.trainer
    if step % t.eval_every == 0 and run.group.leader:
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
    _step_scheduler(run)
    if diagnose:
        run.diagnostics.after_update()
    run.steps_completed = step + 1
    if run.pace.due(step):
        _flush(run, step)
    return not run.pace.diverged


def _step_scheduler(run: Run) -> None:
    """The scheduler's step; with a loss scale, the warning PyTorch gives after a step the
    scale skipped is silenced (no misordered scheduler). Only then: catching warnings costs
    about 50 us, half a percent of a small network's step."""
    if not run.precision.scaling:
        run.scheduler.step()
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step", UserWarning)
        run.scheduler.step()


def _forward_backward(run: Run, watch: AbstractContextManager) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """Accumulate the gradient of the mean loss over grad_accum micro-batches; return that loss
    and the first micro-batch, the one `watch` (the diagnostics' hooks) observes. The forward
    pass runs under the precision's autocast, the backward on the scaled loss."""
    accum = run.config.trainer.grad_accum
    losses, first = [], None
    for i in range(accum):
        x, y = run.batches.next()
        with watch if i == 0 else nullcontext(), _deferred_sync(run, last=i == accum - 1):
            with run.precision.autocast():
                loss = run.loss(run.trained(x), y)
            run.precision.scale(loss / accum if accum > 1 else loss).backward()
        losses.append(loss.detach())
        first = first or (x, y)
    loss = losses[0] if accum == 1 else torch.stack(losses).mean()
    return distributed.mean_over_processes(loss, run.group), first


def _deferred_sync(run: Run, last: bool) -> AbstractContextManager:
    """With several processes, the gradients are averaged once per step, in the last
    micro-batch's backward (DDP's no_sync for the others)."""
    return run.trained.no_sync() if run.group.size > 1 and not last else nullcontext()


@torch.no_grad()
def evaluate(run: Run, split: str) -> dict[str, Tensor]:
    """Loss (and accuracy) of the current model in eval mode, on the validation split or as many
    training examples, as device tensors: reading them would sync, so the recorder reads them at
    its next flush."""
    n = run.task.n_val  # the train loss is measured on as many examples as the val loss
    loss = correct = torch.zeros((), device=run.device)
    predictions = 0  # what the loss is a mean over: labels (of examples or positions), or target values
    run.model.eval()
    for x, y in run.task.chunks(split, n, EVAL_CHUNK):
        with run.precision.autocast():  # the model as it trains
            output = run.model(x).float()
        loss = loss + run.loss(output, y, reduction="sum")
        predictions += y.numel()
        if run.task.classification:
            correct = correct + (output.argmax(dim=-1) == y).sum()
    run.model.train()
    metrics = {f"loss/{split}": loss / predictions}
    if run.task.classification:
        metrics[f"acc/{split}"] = correct / predictions
    return metrics


def _record_metrics(run: Run, step: int, metrics: dict[str, Tensor]) -> None:
    run.recorder.record_scalars(step, list(metrics), torch.stack(list(metrics.values())))


def _flush(run: Run, step: int) -> None:
    """Hand what was measured to the sinks, then agree with the other processes, if any, on
    where the run goes from here."""
    _write(run, run.recorder.flush())
    run.pace.agree(step)


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
    while being set up (run is None), so no measurement is lost. With several processes, rank
    0 writes and the others return theirs."""
    final = {}
    if run is not None:
        status, final = _close(run, status)
    summary = _summary(run, cfg, status, error, final, started, overrides)
    if not distributed.current().leader:
        return summary
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
    status (a divergence found by the last flush counts) and the final metrics. Streamed data's
    worker processes are stopped."""
    recorder = run.recorder
    run.batches.close()
    _write(run, recorder.flush())
    if (recorder.divergence is not None or run.pace.diverged) and status != "failed":
        status = "diverged"
    final = {}
    if status == "completed" and run.group.leader:
        val = evaluate(run, "val")
        _record_metrics(run, run.config.trainer.steps, val)
        final = {**val, **evaluate(run, "train")}
        _write(run, recorder.flush())
        final = {k: v.item() for k, v in final.items()}
    if run.task.streamed:
        run.task.streamed.close()
    if run.config.diagnostics.figures and run.group.leader:
        outcome.end_figures(recorder, run.run_dir, run.sinks, now=run.figures_now)
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
