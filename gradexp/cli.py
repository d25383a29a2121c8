"""The `gradexp` command: a thin wrapper that turns a Hydra config into a call to `train`.

A single run reports a mistake in its config in one line and exits 2. In a multirun every job
ends as a row of the sweep table, whatever happened to it: a job whose combination of values is
invalid, or that raised, is recorded as failed and the sweep goes on. The table is written and
shown at the end even when jobs failed or the sweep was interrupted (when Hydra skips its own
end-of-multirun callback), and the exit status says whether every job ran.

Started by `torchrun --nproc_per_node=N -m gradexp`, N processes train one run together (see
distributed.py): rank 0 claims the run directory and the others follow it there; only rank 0
writes, prints and reports a mistake, and every process exits with the same status.
"""

import contextlib
import os
import shlex
import signal
import sys
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

import gradexp
from gradexp import distributed, output_dir
from gradexp.checkpoint import check_resumable
from gradexp.config import CONFIG_DIR
from gradexp.config.compose import mode_known
from gradexp.config.errors import NO_VALUE, ConfigError
from gradexp.config.preflight import Plan, check_command_line
from gradexp.engine import train
from gradexp.presets import presets_text
from gradexp.process_exit import run_and_exit
from gradexp.provenance import COMMAND_ENV, launcher, versions
from gradexp.run_files import CHECKPOINT, FINISHED, read_overrides, read_summary
from gradexp.sinks.hparams import columns, write_experiment
from gradexp.startup import settle_before_training
from gradexp.sweeps import report
from gradexp.sweeps.callback import SweepCallback
from gradexp.sweeps.naming import naming_overrides
from gradexp.sweeps.objective import objective
from gradexp.sweeps.parallel import stop_idle_workers, threads_per_job

EXIT_CONFIG_ERROR = 2
EXIT_JOBS_FAILED = 1
SWEEP_PROCESS_ENV = "GRADEXP_SWEEP_PROCESS"  # the pid of the process that runs the command
RANK_0_GRACE_S = 2.0  # how long another process lets rank 0 report a mistake before failing too


def entry() -> None:
    """The `gradexp` script and `python -m gradexp`: main(), then the process ends without the
    interpreter's teardown (see process_exit.py)."""
    run_and_exit(main)


def main() -> None:
    """What `gradexp` does; it returns, or raises SystemExit with the exit status."""
    SweepCallback.sweep_dir = None  # set again if this command line starts a sweep
    typed = sys.argv[1:]
    group = distributed.launched()
    os.environ[COMMAND_ENV] = shlex.join([*launcher(group.size), *typed])  # provenance: the command as typed
    os.environ[SWEEP_PROCESS_ENV] = str(os.getpid())  # launched jobs inherit it: see _launched_apart
    if _answered_here(typed):
        return
    try:
        argv = resume_command_line(typed)
        plan = check_command_line(argv)
        if plan.multirun and group.size > 1:
            raise ConfigError(
                "--multirun",
                NO_VALUE,
                f"torchrun's {group.size} processes train one run together",
                "a single run under torchrun, or the sweep without torchrun",
            )
        if plan.runs and plan.resume and not plan.multirun:
            check_resumable(Path(plan.job.trainer.resume), plan.job)
        argv = [f"++{line.lstrip('+')}" if line in plan.forced else line for line in argv] + plan.added
        argv += _claim_output_dir(plan) if group.size == 1 else _follow_rank_0(plan)
    except ConfigError as error:
        _fail(error)
    sys.argv[1:] = argv + naming_overrides(argv)
    try:
        with mode_known(plan.hydra_mode) if plan.runs else contextlib.nullcontext():
            _hydra_main()
    except BaseException as stopped:  # a failed or interrupted sweep still ends with its table
        code = getattr(stopped, "code", None)
        interrupted = isinstance(stopped, KeyboardInterrupt) or code in (
            128 + signal.SIGINT,
            128 + signal.SIGTERM,
        )
        try:
            report.finish_sweep(SweepCallback.sweep_dir, draw=not interrupted)
        except BaseException as error:  # noqa: BLE001 (never hide why the sweep stopped)
            print(f"gradexp: the sweep table could not be written: {error}", file=sys.stderr)
        raise
    table = report.finish_sweep(SweepCallback.sweep_dir)
    stop_idle_workers()
    if table is not None and not table.all_finished():
        sys.exit(EXIT_JOBS_FAILED)


def _answered_here(argv: list[str]) -> bool:
    """Flags gradexp answers itself: its own version (Hydra's --version prints Hydra's), the
    presets, and a shell-completion call that names no action (Hydra raises a traceback)."""
    if "--version" in argv:
        v = versions()
        parts = f"torch {v['torch']}, hydra-core {v['hydra-core']}, Python {v['python']}"
        print(f"gradexp {gradexp.__version__} ({parts})")
        return True
    if "--presets" in argv:
        print(presets_text())
        return True
    completion = {"-sc", "--shell-completion"} & set(argv)
    if completion and not any(a.split("=")[0] in ("install", "uninstall", "query") for a in argv):
        _fail(
            ConfigError(
                completion.pop(),
                NO_VALUE,
                "needs an action: install=<shell>, uninstall=<shell> or query=<shell>",
                'bash, zsh or fish, as in eval "$(gradexp -sc install=bash)"',
            )
        )
    return False


def _claim_output_dir(plan: Plan) -> list[str]:
    """Take the run or sweep directory for this process before Hydra writes into it (see
    output_dir.py); return the override that pins Hydra to the directory taken."""
    if not plan.runs:
        return []
    key = "hydra.sweep.dir" if plan.multirun else "hydra.run.dir"
    allowed = (
        "a new directory, or sweep.resume=true to go on with the sweep in it"
        if plan.multirun
        else "a new or empty directory, or trainer.resume=<dir> to go on with the run in it"
    )
    taken = output_dir.claim(plan.output_dir, key, plan.resume, plan.output_dir_typed, allowed)
    quoted = str(taken).replace("\\", "\\\\").replace("'", "\\'")
    return [] if plan.output_dir_typed else [f"{key}='{quoted}'"]


def _follow_rank_0(plan: Plan) -> list[str]:
    """With several processes: rank 0 claims the run directory, and every other process is
    pinned to the one it took, with Hydra writing nothing there (no .hydra/, no log file)."""
    group = distributed.join()
    claimed, refused = None, None
    if group.leader:
        try:
            claimed = _claim_output_dir(plan)
        except ConfigError as error:
            refused = error
    claimed = distributed.share(claimed, group)
    if refused is not None:
        raise refused
    if claimed is None:  # rank 0 refused the directory and says why
        _exit_after_rank_0()
    if group.leader:
        return claimed
    quiet = ["hydra.job_logging.root.handlers=[]", "++hydra.job_logging.handlers.file.delay=true"]
    return [*claimed, "hydra.output_subdir=null", *quiet]  # no log file opened: nothing logs to it


@hydra.main(config_path=str(CONFIG_DIR), config_name="config", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> float:
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    overrides = list(hydra_cfg.overrides.task)
    if hydra_cfg.mode != RunMode.MULTIRUN:
        try:
            settle_before_training()
            summary = train(cfg, run_dir, overrides=overrides)
            if distributed.current().leader:
                write_experiment(run_dir, [columns(summary)])  # the run's own HParams columns
        except ConfigError as error:
            _fail(error)
        except KeyboardInterrupt as stopped:
            _interrupted(run_dir, stopped)
        finally:
            distributed.leave()
        return 0.0
    direction = hydra_cfg.sweeper.get("direction")
    previous = read_summary(run_dir) if cfg.sweep.resume else {}
    if previous.get("status") in FINISHED:
        report.job_line(f"{run_dir.name} (kept from before)", previous)
        return objective(previous, cfg, direction)
    if previous.get("status") == "interrupted" and (run_dir / CHECKPOINT).is_file():
        cfg.trainer.resume = str(run_dir)  # go on from its checkpoint
    try:
        threads = threads_per_job(hydra_cfg)
        figures_now = bool(cfg.sweep.job_figures)  # else gradexp-report <job> draws them
        settle_before_training()
        summary = train(cfg, run_dir, False, overrides, threads, figures_now)
    except KeyboardInterrupt as stopped:
        if not _launched_apart():
            _interrupted(run_dir, stopped)
        summary = read_summary(run_dir) or {"status": "interrupted"}
    except Exception as error:  # noqa: BLE001 (a job's failure is a row of the table, not the sweep's end)
        summary = read_summary(run_dir) or {"status": "failed", "error": str(error)}
    report.job_line(run_dir.name, summary)
    sys.stdout.flush()  # a joblib worker may be killed once idle (stop_idle_workers)
    return objective(summary, cfg, direction)


def resume_command_line(argv: list[str]) -> list[str]:
    """`gradexp trainer.resume=<run dir>` goes on with the run's own overrides, in its own
    directory; anything else on the command line comes after them (and must not change the
    config: the checkpoint is checked against it)."""
    resume = [a for a in argv if a.startswith("trainer.resume=")]
    if not resume:
        return argv
    run_dir = Path(resume[-1].partition("=")[2])
    saved = read_overrides(run_dir)
    if saved is None:
        raise ConfigError(
            "trainer.resume", str(run_dir), "not a gradexp run directory (no .hydra/overrides.yaml)"
        )
    typed_dir = [a.partition("=")[2] for a in argv if a.startswith("hydra.run.dir=")]
    if typed_dir and Path(typed_dir[-1]).resolve() != run_dir.resolve():
        raise ConfigError(
            "hydra.run.dir",
            typed_dir[-1],
            f"a resume goes on in the run's own directory ({run_dir})",
            "leave hydra.run.dir out, or start a new run there without trainer.resume",
        )
    kept = [o for o in saved if not o.startswith("trainer.resume=")]
    rest = [a for a in argv if not a.startswith(("trainer.resume=", "hydra.run.dir="))]
    return [*kept, *rest, f"trainer.resume={run_dir}", f"hydra.run.dir={run_dir}"]


def _launched_apart() -> bool:
    """Whether this job runs in a process of its own, started by a launcher (joblib's workers,
    a SLURM job, Ray): a signal to it (scancel, a pre-emption) ends this job, as an interrupted
    row, while the sweep goes on. With Hydra's basic launcher the jobs run in the sweep's own
    process, and a signal ends the sweep."""
    return os.environ.get(SWEEP_PROCESS_ENV) != str(os.getpid())


def _interrupted(run_dir: Path, stopped: KeyboardInterrupt) -> None:
    """train() has already flushed the events and written summary.json (status: interrupted).
    The exit status is the shell's 128 + signal number: 130 for Ctrl-C, 143 for SIGTERM."""
    signum = getattr(stopped, "signum", signal.SIGINT)
    if distributed.launched().leader:
        print(
            f"gradexp: interrupted ({signal.Signals(signum).name}); what was recorded is in {run_dir}",
            file=sys.stderr,
        )
    sys.exit(128 + signum)


def _fail(error: ConfigError) -> None:
    if distributed.launched().leader:  # with several processes, rank 0 alone says it
        print(f"gradexp: error: {error}", file=sys.stderr)
        sys.exit(EXIT_CONFIG_ERROR)
    _exit_after_rank_0()


def _exit_after_rank_0() -> None:
    """A process other than rank 0 that meets a mistake: rank 0 meets the same one and says it,
    but torchrun stops every process as soon as one of them fails, so this one waits a moment
    (RANK_0_GRACE_S) before its failure can cut rank 0 short. A process's exit used to take
    that long anyway, in the interpreter's teardown (see process_exit.py)."""
    time.sleep(RANK_0_GRACE_S)
    sys.exit(EXIT_CONFIG_ERROR)
