"""What a run directory holds, by name, and the readers of its small files. The CLI, the sweep
table and `gradexp-report` all ask these, so a run is recognised the same way everywhere."""

import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

SUMMARY = "summary.json"
CHECKPOINT = "checkpoint.pt"
HYDRA_DIR = ".hydra"
EVENTS_GLOB = "events.out.tfevents.*"
RUN_FIGURES = "figures"  # a run's end-of-run figures, as PNG
FIGURE_DATA = "figure_data.json"  # what they are drawn from, when a sweep's job left them for later
MULTIRUN = "multirun.yaml"  # Hydra's record of a sweep, in the sweep directory
STATUSES = ("completed", "diverged", "failed", "interrupted", "unfinished")
FINISHED = ("completed", "diverged")  # results; the other statuses mean the run did not run through
_RECORDS: dict[tuple, DictConfig] = {}  # the sweep record last loaded (sweep_record), by file version


def is_run(path: Path) -> bool:
    """A run directory: gradexp wrote its summary there, or Hydra started a run there."""
    return (path / SUMMARY).is_file() or (path / HYDRA_DIR).is_dir()


def is_sweep(path: Path) -> bool:
    """A sweep directory gradexp made (Hydra's multirun record names gradexp's job)."""
    try:
        return sweep_record(path).job.name == "gradexp"
    except Exception:  # noqa: BLE001 (missing or unreadable: not a sweep gradexp made)
        return False


def sweep_record(path: Path) -> DictConfig:
    """The `hydra` node of Hydra's record of the sweep in `path` (multirun.yaml), loaded once
    for each version of the file: a sweep's end asks it up to four questions, and each load
    took 10 to 40 ms. Raises as OmegaConf.load does, where there is no readable record.
    Callers read it and never change it."""
    file = path / MULTIRUN
    stat = file.stat()
    key = (str(file.resolve()), stat.st_mtime_ns, stat.st_size)
    if key not in _RECORDS:
        _RECORDS.clear()  # one sweep at a time
        _RECORDS[key] = OmegaConf.load(file).hydra
    return _RECORDS[key]


def read_summary(run: Path) -> dict:
    """The run's summary.json, or {} when there is none (still running, or killed outright)."""
    try:
        return json.loads((run / SUMMARY).read_text())
    except (OSError, ValueError):
        return {}


def read_overrides(run: Path) -> list[str] | None:
    """Hydra's record of the run's overrides (a YAML list of `key=value`); None without a
    readable one."""
    try:
        return [str(o) for o in OmegaConf.load(run / HYDRA_DIR / "overrides.yaml")]
    except Exception:  # noqa: BLE001 (no record, or a broken one)
        return None
