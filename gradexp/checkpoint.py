"""Checkpoints: everything a run needs to go on exactly where it stopped, number for number on
the CPU: the model, optimizer and scheduler, every random state (torch's, the batch order's),
what the recorder has kept for the summary and the figures, and the diagnostics' warm starts.

Written atomically (a temporary file renamed over the last checkpoint, so a kill at any moment
leaves the previous one whole) and read with `torch.load(weights_only=True)`, which builds
tensors and plain containers only: a file from elsewhere cannot run code, and one that is not
a gradexp checkpoint of this run is refused in one line.
"""

import logging
import re
import warnings
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from gradexp.atomic import write_atomic
from gradexp.config.errors import NO_VALUE, ConfigError
from gradexp.run_files import CHECKPOINT, FINISHED, read_summary

log = logging.getLogger(__name__)
FORMAT = "gradexp-checkpoint/1"


def identity(cfg: DictConfig) -> dict:
    """The resolved config, less trainer.resume, the sweep's own settings, task.data_dir
    (where a dataset's files are, not which: a moved cache still holds the same data) and
    trainer.workers (how many processes read the data, streamed or not, not which data and in
    which order): what makes a checkpoint this run's."""
    resolved = as_container(cfg)
    resolved.get("trainer", {}).pop("resume", None)
    resolved.get("trainer", {}).pop("workers", None)
    resolved.get("task", {}).pop("data_dir", None)
    resolved.pop("sweep", None)
    return resolved


def as_container(cfg: DictConfig) -> dict:
    """The config as run; as written when it cannot be resolved (the run failed on that)."""
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # noqa: BLE001 (the summary must be written whatever the config holds)
        return OmegaConf.to_container(cfg, resolve=False)


def check_resumable(run_dir: Path, cfg: DictConfig) -> None:
    """Refuse, before anything is written into `run_dir`, a resume that cannot go on: a run that
    already ran through, or one whose checkpoint is missing, unreadable or of another config.
    A refused resume leaves the run exactly as it was."""
    status = read_summary(run_dir).get("status")
    if status in FINISHED:
        raise ConfigError(
            "trainer.resume",
            str(run_dir),
            f"the run has {status} (its summary.json says so): there is nothing to resume",
            "an interrupted run's directory; start a new run with another hydra.run.dir",
        )
    load(run_dir, identity(cfg), mmap=True)


def save(run_dir: Path, state: dict) -> Path:
    path = run_dir / CHECKPOINT
    write_atomic(path, lambda f: torch.save({"format": FORMAT, **state}, f))
    return path


def load(run_dir: Path, config: dict, mmap: bool = False) -> dict:
    """The checkpoint in `run_dir`, if it is gradexp's and was written by a run of `config`
    (the resolved config, trainer.resume aside). With `mmap` the tensors stay on disk until
    read: the CLI's check reads the format and the config, and the run loads the rest."""
    path = run_dir / CHECKPOINT
    if not path.is_file():
        raise ConfigError("trainer.resume", str(run_dir), f"no {CHECKPOINT} in it", "a gradexp run directory")
    try:
        with warnings.catch_warnings():  # torch warns of a foreign file's pickle protocol: the error says it
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(path, weights_only=True, map_location="cpu", mmap=mmap)
    except Exception as error:  # noqa: BLE001 (any unreadable file is the same mistake to the user)
        if mmap:  # mmap refuses a file that is no torch.save zip at all: say why it is unreadable
            return load(run_dir, config)
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip()  # torch's message carries terminal colours
        first = text.splitlines()[0] if text else type(error).__name__
        raise ConfigError("trainer.resume", str(path), f"not a readable checkpoint ({first})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ConfigError(
            "trainer.resume", str(path), "not a gradexp checkpoint", f"a {CHECKPOINT} written by gradexp"
        )
    differs = _first_difference(state.get("config"), config)
    if differs is not None:
        raise ConfigError(
            "trainer.resume",
            str(run_dir),
            f"its checkpoint is of another config ({differs} differs)",
            "the same overrides as the run being resumed",
        )
    return state


def restore(target, state: dict, what: str) -> None:
    """`target.load_state_dict(state)`, with a mismatch (another model, other shapes) as one line."""
    try:
        target.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError, TypeError) as error:
        first = str(error).strip().splitlines()[0]
        raise ConfigError(
            "trainer.resume", NO_VALUE, f"the checkpoint's {what} does not fit this run: {first}"
        ) from None


def resume_run(run, source: Path) -> None:
    """Go on from the checkpoint in `source`: every state of `run` (an engine.Run) as it was
    after the checkpoint's last step."""
    state = load(source, run.identity)
    restore(run.model, state["model"], "model")
    restore(run.optimizer, state["optimizer"], "optimizer")
    restore(run.scheduler, state["scheduler"], "scheduler")
    restore(run.precision, state.get("precision", {}), "loss scale")
    restore(run.batches, state["batches"], "batch order")
    restore(run.recorder, state["recorder"], "records")
    if run.diagnostics is not None and state["diagnostics"] is not None:
        restore(run.diagnostics, state["diagnostics"], "diagnostics")
    torch.set_rng_state(state["rng"]["torch"])
    if run.device.type == "cuda" and state["rng"]["cuda"] is not None:
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    run.steps_completed = state["step"]
    for sink in run.sinks:
        sink.resume_at(state["step"])
    log.info("resumed from %s at step %d", source, state["step"])


def save_run(run) -> Path:
    """A checkpoint of `run` (an engine.Run) after its last completed step."""
    cuda = torch.cuda.get_rng_state_all() if run.device.type == "cuda" else None
    return save(
        run.run_dir,
        {
            "step": run.steps_completed,
            "config": run.identity,
            "model": run.model.state_dict(),
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "precision": run.precision.state_dict(),
            "batches": run.batches.state_dict(),
            "recorder": run.recorder.state_dict(),
            "diagnostics": run.diagnostics.state_dict() if run.diagnostics is not None else None,
            "rng": {"torch": torch.get_rng_state(), "cuda": cuda},
        },
    )


def _first_difference(saved: object, current: object, prefix: str = "") -> str | None:
    if isinstance(saved, dict) and isinstance(current, dict):
        for key in sorted(set(saved) | set(current)):
            found = _first_difference(saved.get(key), current.get(key), f"{prefix}{key}.")
            if found is not None:
                return found
        return None
    return None if saved == current else prefix.rstrip(".") or "config"
