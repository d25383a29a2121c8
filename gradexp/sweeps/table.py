"""The table of a sweep's jobs, rebuilt from the files the jobs left behind (each run directory's
summary.json), so it can be made at the end of a sweep, after a failure, or any time later.

A job that wrote no summary.json (killed outright, or still running) is a row too, with status
`unfinished`; nothing under the directory is modified except the two table files.
"""

import csv
import io
import math
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from hydra._internal.config_loader_impl import get_overrides_dirname
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from gradexp.atomic import write_text_atomic
from gradexp.config import sweeper
from gradexp.provenance import HOW_IT_RAN
from gradexp.run_files import (
    FINISHED,
    HYDRA_DIR,
    STATUSES,
    SUMMARY,
    read_overrides,
    read_summary,
    sweep_record,
)
from gradexp.sinks.summary import write_json_atomic
from gradexp.sweeps.groups import SEED_KEY, Group, csv_columns, group_jobs
from gradexp.sweeps.naming import EXCLUDE_KEY, RESOLVER, job_dir_name

TABLE_JSON, TABLE_CSV, GROUP_CSV = "sweep_table.json", "sweep_table.csv", "sweep_group_table.csv"
METRICS = (
    "final_train_loss",
    "final_val_loss",
    "final_val_acc",
    "grad_ratio_first_last",
    "verdict",
    "verdict_last",
    "chi1_predicted",
    "steps_completed",
    "diverged_step",
    "amp_skipped_steps",
    "wall_time_s",
)


@dataclass
class Job:
    path: Path  # the run directory
    name: str  # its path relative to the table's root ("." for a single run)
    status: str
    overrides: dict[str, str]  # key -> value as typed on the command line
    summary: dict = field(default_factory=dict)

    @property
    def error(self) -> str | None:
        return self.summary.get("error")


@dataclass
class Table:
    root: Path
    jobs: list[Job]
    swept: list[str]  # override keys whose value differs between jobs
    fixed: dict[str, str]  # override keys every job shares, with their value

    def seeded(self) -> bool:
        """Whether the sweep ran its configurations over several seeds (sweep.seeds, or
        trainer.seed swept by hand)."""
        return SEED_KEY in self.swept

    def groups(self) -> list[Group]:
        """The jobs by configuration: every swept key but the seed."""
        return group_jobs(self.jobs, self.swept)

    def all_finished(self) -> bool:
        return all(j.status in FINISHED for j in self.jobs)

    def counts(self) -> dict[str, int]:
        return {
            s: sum(j.status == s for j in self.jobs)
            for s in STATUSES
            if any(j.status == s for j in self.jobs)
        }

    def rows(self) -> list[dict]:
        """One flat dict per job: name, status, swept values, metrics, error."""
        return [
            {
                "job": j.name,
                "status": j.status,
                **{k: j.overrides.get(k) for k in self.swept},
                **{m: j.summary.get(m) for m in METRICS},
                "error": j.error,
            }
            for j in self.jobs
        ]


def find_jobs(root: Path) -> list[Job]:
    """Every run under `root` (or `root` itself): a directory holding summary.json, or one Hydra
    started (.hydra/) that never wrote its summary."""
    runs = {p.parent for p in root.rglob(SUMMARY)} | {p.parent for p in root.rglob(HYDRA_DIR)}
    return sorted((_job(root, run) for run in runs), key=lambda j: _natural(j.name))


def build(root: Path) -> Table:
    """The table of the runs under `root`, with a row (`unfinished`) for each job of the sweep's
    grid that never started (an interrupted sweep)."""
    jobs = find_jobs(root)
    found = {j.name for j in jobs}
    never_started = [
        Job(
            root / name,
            name,
            "unfinished",
            _split(overrides),
            {"error": "never started: the sweep stopped first"},
        )
        for name, overrides in planned_jobs(root)
        if name not in found
    ]
    jobs = sorted(jobs + never_started, key=lambda j: _natural(j.name))
    keys = list(dict.fromkeys(k for j in jobs for k in j.overrides))
    planned = planned_sweep(root)  # what the sweep meant to vary, even if one job ran
    swept = [k for k in keys if len({j.overrides.get(k) for j in jobs}) > 1 or k in planned]
    fixed = {k: jobs[0].overrides[k] for k in keys if k not in swept}
    return Table(root, jobs, swept, fixed)


def write(table: Table) -> tuple[Path, Path]:
    """sweep_table.json (with the fixed overrides, the counts and the groups of seeds),
    sweep_table.csv (a row per job) and sweep_group_table.csv (a row per configuration),
    atomically."""
    rows, groups = table.rows(), table.groups()
    json_path, csv_path = table.root / TABLE_JSON, table.root / TABLE_CSV
    write_json_atomic(
        json_path,
        {
            "swept": table.swept,
            "fixed": table.fixed,
            "counts": table.counts(),
            "jobs": rows,
            "groups": [g.row() for g in groups],
        },
    )
    _write_csv(csv_path, ["job", "status", *table.swept, *METRICS, "error"], rows)
    _write_csv(table.root / GROUP_CSV, csv_columns(table.swept), [g.flat_row() for g in groups])
    return json_path, csv_path


def _write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: _csv_value(v) for k, v in row.items()} for row in rows)
    write_text_atomic(path, text.getvalue())


def planned_sweep(root: Path) -> set[str]:
    """The keys a sweep varies, from Hydra's record of it (multirun.yaml): the command line's
    sweeps and the sweeper's params."""
    try:
        hydra = sweep_record(root)
        typed = OverridesParser.create().parse_overrides(list(hydra.overrides.task))
        params = hydra.sweeper.get("params") or {}
    except Exception:  # noqa: BLE001 (no record, or one this version cannot read: judge by the jobs)
        return set()
    return {o.key_or_group for o in typed if o.is_sweep_override()} | {k.lstrip("+~") for k in params}


def planned_jobs(root: Path) -> list[tuple[str, list[str]]]:
    """Every job of the grid a sweep meant to run, as (directory name, overrides), from Hydra's
    record of it, in the order Hydra's basic sweeper runs them; none for a sweep this cannot
    work out (a searching sweeper, a job directory pattern of the user's own)."""
    try:
        hydra = sweep_record(root)
        if hydra.sweeper._target_ not in sweeper.GRID_SWEEPERS:
            return []
        if RESOLVER not in str(OmegaConf.to_container(hydra.sweep, resolve=False).get("subdir")):
            return []
        params = [f"{k}={v}" for k, v in (hydra.sweeper.get("params") or {}).items()]
        overrides = OverridesParser.create().parse_overrides([*params, *hydra.overrides.task])
        [grid] = BasicSweeper.split_arguments(overrides, None)
        return [(job_dir_name(num, _dirname(job, hydra)), job) for num, job in enumerate(grid)]
    except Exception:  # noqa: BLE001 (no record, or one this version cannot read: list what ran)
        return []


def _dirname(job: list[str], hydra: DictConfig) -> str:
    """Hydra's override_dirname of a job, by Hydra's own function."""
    naming = hydra.job.config.override_dirname
    overrides = OverridesParser.create().parse_overrides(job)
    return get_overrides_dirname(overrides, list(naming.exclude_keys), naming.item_sep, naming.kv_sep)


def resume_command(root: Path) -> str | None:
    """The command that goes on with the sweep in `root`: its grid and launcher, in the same
    directory, with sweep.resume=true (None when `root` is no sweep of gradexp's)."""
    try:
        hydra = sweep_record(root)
        own = [
            o
            for o in hydra.overrides.hydra
            if not o.startswith(("hydra.sweep.dir=", "hydra.mode=", EXCLUDE_KEY)) and o != sweeper.CHOICE
        ]
        task = [o for o in hydra.overrides.task if not o.startswith(HOW_IT_RAN)]
    except Exception:  # noqa: BLE001 (not a sweep whose record can be read)
        return None
    return shlex.join(["gradexp", "-m", *own, *task, f"hydra.sweep.dir={root}", "sweep.resume=true"])


def counts_line(counts: dict[str, int]) -> str:
    total = sum(counts.values())
    parts = ", ".join(f"{n} {status}" for status, n in counts.items())
    return f"{total} job{'s' if total != 1 else ''}: {parts}" if total else "no jobs found"


def _job(root: Path, run: Path) -> Job:
    summary = read_summary(run)
    status = summary.get("status", "unfinished") if summary else "unfinished"
    overrides = summary.get("overrides") if summary else None
    if overrides is None:
        overrides = read_overrides(run) or []
    name = run.relative_to(root).as_posix()
    if not summary:
        summary = {"error": "no summary.json: the job is still running, or was killed before writing it"}
    return Job(run, name, status, _split(overrides), summary)


def _split(overrides: list[str]) -> dict[str, str]:
    """key -> value, less the overrides that say how a job went on (a resume), not what it is."""
    pairs = (o.split("=", 1) for o in overrides if "=" in o and not o.startswith(HOW_IT_RAN))
    return {key.lstrip("+~"): value for key, value in pairs}


def _natural(name: str) -> list:
    """'2_x' before '10_x': job numbers compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _csv_value(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return ""
    return "" if value is None else value
