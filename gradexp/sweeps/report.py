"""One comparison of a sweep's jobs: the table (sweep_table.csv and .json, and a rich table in
the terminal) and the comparison figures (report/*.png).

The CLI calls `finish_sweep` when a multirun ends, however it ends; `gradexp-report <dir>`
(`main`) rebuilds the same from the files of any sweep or run directory, at any time.
"""

import argparse
import sys
from pathlib import Path

import torch
from rich.console import Console
from rich.markup import escape
from rich.table import Table as RichTable

from gradexp.activations import ACTIVATIONS
from gradexp.config.schema import ActivationConfig
from gradexp.diagnostics.figures import activations_and_derivatives
from gradexp.diagnostics.theory import derivative
from gradexp.sinks.console import fmt, relative_to_cwd
from gradexp.sinks.hparams import columns, write_experiment
from gradexp.sweeps import figures
from gradexp.sweeps.table import Table, build, counts_line, write

FIGURES_DIR = "report"
_COLOURS = {"completed": "green", "diverged": "yellow"}
_SHOWN_METRICS = (
    ("final_train_loss", "train loss"),
    ("final_val_loss", "val loss"),
    ("final_val_acc", "val acc"),
    ("grad_ratio_first_last", "|g| first/last"),
    ("verdict", "verdict"),
)


def job_line(name: str, summary: dict, console: Console | None = None) -> None:
    """What a multirun job prints when it ends: one line, so parallel jobs stay legible."""
    status = summary.get("status", "failed")
    line = f"[{_COLOURS.get(status, 'red')}]{status}[/] {escape(name)}"
    if summary.get("final_val_loss") is not None:
        line += f"  val loss {fmt(summary['final_val_loss'])}"
    if summary.get("verdict"):
        line += f"  verdict {summary['verdict']}"
    if summary.get("error"):
        line += f"  error: {escape(summary['error'])}"
    (console or _console()).print(line, highlight=False)


def finish_sweep(root: Path | None, draw: bool = True) -> Table | None:
    """Write and show the table of the jobs under `root` (and the figures)."""
    if root is None or not root.is_dir():
        return None
    table = build(root)
    show(table, draw)
    return table


def show(table: Table, draw: bool = True, console: Console | None = None) -> None:
    """Write the table's files, the HParams columns and the figures; print it all."""
    root = table.root
    console = console or _console()
    write(table)
    write_experiment(root, [columns(j.summary) for j in table.jobs if "status" in j.summary])
    console.print(render(table))
    for job in table.jobs:
        if job.error and job.status != "completed":
            console.print(f"[red]{job.status}[/] {escape(job.name)}: {escape(job.error)}", highlight=False)
    drawn = []
    if draw and table.jobs:
        try:
            drawn = figures.draw_all(table, root / FIGURES_DIR)
        except Exception as error:  # noqa: BLE001 (the table is written; a figure must not undo that)
            console.print(f"[red]figures not drawn:[/] {escape(str(error))}", highlight=False)
    shown = relative_to_cwd(str(root))
    console.print(f"table:       {shown}/sweep_table.csv (and .json)")
    if drawn:
        console.print(f"figures:     {shown}/{FIGURES_DIR}/ ({', '.join(p.name for p in drawn)})")
    console.print(f"tensorboard: tensorboard --logdir {shown}")
    colour = "green" if table.all_finished() else "red"
    console.print(f"[bold {colour}]{counts_line(table.counts())}[/]", highlight=False)


def _console() -> Console:
    """The terminal's width when there is one; wide enough for the table in a log file."""
    console = Console()
    return console if console.is_terminal else Console(width=200)


def render(table: Table) -> RichTable:
    shown = RichTable(
        title=f"{len(table.jobs)} job(s)" + (f", fixed: {_fixed(table)}" if table.fixed else "")
    )
    shown.add_column("job", no_wrap=True)
    shown.add_column("status")
    for key in table.swept:
        shown.add_column(key)
    for _, heading in _SHOWN_METRICS:
        shown.add_column(heading, justify="right")
    for job in table.jobs:
        values = [v if isinstance(v := job.summary.get(key), str) else fmt(v) for key, _ in _SHOWN_METRICS]
        status = f"[{_COLOURS.get(job.status, 'red')}]{job.status}[/]"
        swept = [escape(job.overrides.get(k, "-")) for k in table.swept]
        shown.add_row(escape(_short_name(job.name, table)), status, *swept, *values)
    return shown


def _short_name(name: str, table: Table) -> str:
    """The job's number when its swept values have columns of their own."""
    number = name.split("_", 1)[0]
    return number if table.swept and number.isdigit() else name


def _fixed(table: Table) -> str:
    return escape(" ".join(f"{k}={v}" for k, v in table.fixed.items()))


def draw_activations(folder: Path) -> Path:
    """Every activation of the registry beside its derivative, computed by autograd from the very
    modules gradexp trains with."""
    h = torch.linspace(-5, 5, 1001, dtype=torch.float64)
    curves = {}
    for name, make in ACTIVATIONS.items():
        module = make(ActivationConfig(name=name)).double()
        curves[name] = (h.numpy(), module(h).detach().numpy(), derivative(module, h).numpy())
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "activations.png"
    path.write_bytes(activations_and_derivatives(curves))
    return path


def main(argv: list[str] | None = None) -> None:
    """gradexp-report <dir>: the table and the figures of a sweep or run directory."""
    parser = argparse.ArgumentParser(
        prog="gradexp-report",
        description="Rebuild the table (sweep_table.csv/.json) and the comparison figures "
        "(report/*.png) of a gradexp sweep or run directory.",
    )
    parser.add_argument(
        "directory", type=Path, help="a sweep directory (outputs/sweeps/...) or a run directory"
    )
    parser.add_argument("--no-figures", action="store_true", help="write and show the table only")
    parser.add_argument(
        "--activations",
        action="store_true",
        help="instead, draw every activation with its derivative into <directory>/activations.png",
    )
    args = parser.parse_args(argv)
    try:
        _report(args)
    except OSError as error:  # a directory that cannot be written, a file where a folder should be
        print(f"gradexp-report: error: {error.filename or args.directory}: {error.strerror}", file=sys.stderr)
        sys.exit(2)


def _report(args: argparse.Namespace) -> None:
    if args.activations:
        path = draw_activations(args.directory)
        print(f"figure: {relative_to_cwd(str(path))}")
        return
    if not args.directory.is_dir():
        print(f"gradexp-report: error: {args.directory}: no such directory", file=sys.stderr)
        sys.exit(2)
    table = build(args.directory)
    if not table.jobs:
        print(
            f"gradexp-report: error: {args.directory}: no gradexp runs in it "
            "(no summary.json or .hydra/ below it)",
            file=sys.stderr,
        )
        sys.exit(2)
    show(table, draw=not args.no_figures)
