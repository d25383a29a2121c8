"""What `gradexp-report` and the end of a sweep print: a sweep's table (sweep_table.csv and
.json, and the terminal) with its comparison figures (report/*.png); a saved run's report again;
runs side by side.

The CLI calls `finish_sweep` when a multirun ends, however it ends. `gradexp-report` (`main`)
rebuilds the same from the files alone, at any time, and writes only into a sweep directory
gradexp made, and into a sweep job's directory the end-of-run figures the job left for later;
any other run directory, or any other directory, is read and never written.
"""

import argparse
import sys
from pathlib import Path

import torch
from rich.console import Console
from rich.markup import escape

from gradexp.activations import ACTIVATIONS
from gradexp.config.schema import ActivationConfig
from gradexp.diagnostics.report import FigureData
from gradexp.diagnostics.theory import derivative
from gradexp.outcome import draw_figures
from gradexp.process_exit import run_and_exit
from gradexp.run_files import FIGURE_DATA, RUN_FIGURES, is_run, is_sweep, read_summary
from gradexp.sinks.console import later_diagnostic_step, relative_to_cwd, run_report
from gradexp.sinks.hparams import columns, write_experiment
from gradexp.sinks.layout import Column, fmt, make_console, stacked_tables
from gradexp.sinks.tensorboard import TensorBoardSink
from gradexp.sweeps import compare
from gradexp.sweeps.groups import SEED_KEY, VERDICTS
from gradexp.sweeps.table import Table, build, counts_line, resume_command, write

FIGURES_DIR = "report"
COMPARISON_FIGURE = "gradexp_comparison.png"
_COLOURS = {"completed": "green", "diverged": "yellow"}
_SHOWN_METRICS = (
    ("final_train_loss", "train loss"),
    ("final_val_loss", "val loss"),
    ("final_val_acc", "val acc"),
    ("grad_ratio_first_last", "grad 1st layer / last layer"),
    ("verdict", "verdict step 0"),
    ("verdict_last", "verdict last"),
)


def job_line(name: str, summary: dict, console: Console | None = None) -> None:
    """What a multirun job prints when it ends: one line, so parallel jobs stay legible."""
    status = summary.get("status", "failed")
    line = f"[{_COLOURS.get(status, 'red')}]{status}[/] {escape(name)}"
    if summary.get("final_val_loss") is not None:
        line += f"  val loss {fmt(summary['final_val_loss'])}"
    if summary.get("verdict"):
        line += f"  verdict {summary['verdict']} at step {summary.get('verdict_step') or 0}"
        later = later_diagnostic_step(summary)
        if summary.get("verdict_last") and later is not None:
            line += f", {summary['verdict_last']} at step {later}"
    if summary.get("error"):
        line += f"  error: {escape(summary['error'])}"
    (console or make_console()).print(line, highlight=False)


def finish_sweep(root: Path | None, draw: bool = True) -> Table | None:
    """Write and show the table of the jobs under `root` (and the figures)."""
    if root is None or not root.is_dir():
        return None
    table = build(root)
    show(table, draw)
    return table


def show(table: Table, draw: bool = True, console: Console | None = None, write_files: bool = True) -> None:
    """Print the table, and (`write_files`) write its files, the HParams columns and the figures."""
    root = table.root
    console = console or make_console()
    if write_files:
        write(table)
        write_experiment(root, [columns(j.summary) for j in table.jobs if "status" in j.summary])
    for part in render(table, console.width):
        console.print(part)
    never_started = {job.name for job in table.jobs if not job.path.exists()}
    for job in table.jobs:
        if job.error and job.status != "completed" and job.name not in never_started:
            first_line = job.error.strip().splitlines()[0] if job.error.strip() else job.error
            console.print(f"[red]{job.status}[/] {escape(job.name)}: {escape(first_line)}", highlight=False)
    if never_started:
        console.print(
            f"[red]unfinished[/] {len(never_started)} job(s) never started: the sweep stopped first"
        )
    drawn = []
    if write_files and draw and table.jobs:
        try:
            # matplotlib: imported where a figure is drawn (see diagnostics/figures.py)
            from gradexp.sweeps import figures

            drawn = figures.draw_all(table, root / FIGURES_DIR)
        except Exception as error:  # noqa: BLE001 (the table is written; a figure must not undo that)
            console.print(f"[red]figures not drawn:[/] {escape(str(error))}", highlight=False)
    shown = relative_to_cwd(str(root))
    if write_files:
        console.print(f"table:       {shown}/sweep_table.csv (and .json)")
    else:
        console.print("not a gradexp sweep directory: the table above was written nowhere")
    if drawn:
        console.print(f"figures:     {shown}/{FIGURES_DIR}/ ({', '.join(p.name for p in drawn)})")
    elif write_files and not draw:
        console.print(f"figures:     not drawn; gradexp-report {shown} draws them")
    console.print(f"tensorboard: tensorboard --logdir {shown}")
    resume = resume_command(Path(shown)) if not table.all_finished() else None
    if resume and any(j.status in ("interrupted", "unfinished") for j in table.jobs):
        console.print(f"resume:      {escape(resume)}", highlight=False, soft_wrap=True)
    colour = "green" if table.all_finished() else "red"
    console.print(f"[bold {colour}]{counts_line(table.counts())}[/]", highlight=False)


def render(table: Table, width: int = 200) -> list:
    """The table as rich tables, stacked when it is wider than `width`; no cell is ever cut. A
    sweep over several seeds shows a row per configuration, with the spread over its seeds."""
    if table.seeded():
        return render_groups(table, width)
    title = f"{len(table.jobs)} job(s)" + (f", fixed: {_fixed(table)}" if table.fixed else "")
    keys = [Column("job", right=False), Column("status", right=False)]
    swept = [Column(key, right=False) for key in table.swept]
    shown = _SHOWN_METRICS
    if any(job.summary.get("amp_skipped_steps") is not None for job in table.jobs):
        shown += (("amp_skipped_steps", "steps skipped (loss scale)"),)
    metrics = [Column(heading) for _, heading in shown]
    rows = []
    for job in table.jobs:
        values = [v if isinstance(v := job.summary.get(key), str) else fmt(v) for key, _ in shown]
        status = f"[{_COLOURS.get(job.status, 'red')}]{job.status}[/]"
        rows.append(
            [
                escape(_short_name(job.name, table)),
                status,
                *(escape(job.overrides.get(k, "-")) for k in table.swept),
                *values,
            ]
        )
    return stacked_tables(title, keys, swept + metrics, rows, width)


def render_groups(table: Table, width: int = 200) -> list:
    """A row per configuration: its seeds, how they ended, each metric's mean ± standard
    deviation over the seeds (with how many, where some had none) and the verdicts' counts."""
    groups = table.groups()
    title = f"{len(table.jobs)} job(s) in {len(groups)} configuration(s), mean ± std over seeds"
    title += f", fixed: {_fixed(table)}" if table.fixed else ""
    keys = [Column(key, right=False) for key in table.swept if key != SEED_KEY] or [
        Column("configuration", right=False)  # the seed alone was swept
    ]
    metrics = [Column("seeds"), Column("ended", right=False)]
    metrics += [Column(heading) for _, heading in _SHOWN_METRICS]
    rows = []
    for group in groups:
        ended = ", ".join(
            f"[{_COLOURS.get(status, 'red')}]{n} {status}[/]" for status, n in group.statuses().items()
        )
        values = []
        for key, _ in _SHOWN_METRICS:
            if key in VERDICTS:
                values.append(escape(group.verdicts(key) or "-"))
                continue
            spread = group.spread(key)
            partial = spread is not None and spread.n < len(group.jobs)
            values.append("-" if spread is None else spread.text() + (f" (n={spread.n})" if partial else ""))
        names = [escape(v) for v in group.values.values()] or ["all jobs"]
        rows.append([*names, str(len(group.jobs)), ended, *values])
    return stacked_tables(title, keys, metrics, rows, width)


def _short_name(name: str, table: Table) -> str:
    """The job's number when its swept values have columns of their own."""
    number = name.split("_", 1)[0]
    return number if table.swept and number.isdigit() else name


def _fixed(table: Table) -> str:
    return escape(" ".join(f"{k}={v}" for k, v in table.fixed.items()))


def draw_activations(folder: Path) -> Path:
    """Every activation of the registry beside its derivative, computed by autograd from the very
    modules gradexp trains with."""
    # matplotlib: imported where a figure is drawn (see diagnostics/figures.py)
    from gradexp.diagnostics.figures import activations_and_derivatives

    h = torch.linspace(-5, 5, 1001, dtype=torch.float64)
    curves = {}
    for name, make in ACTIVATIONS.items():
        module = make(ActivationConfig(name=name)).double()
        curves[name] = (h.numpy(), module(h).detach().numpy(), derivative(module, h).numpy())
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "activations.png"
    path.write_bytes(activations_and_derivatives(curves))
    return path


def entry() -> None:
    """The `gradexp-report` script: main(), then the process ends without the interpreter's
    teardown (see process_exit.py)."""
    run_and_exit(main)


def main(argv: list[str] | None = None) -> None:
    """gradexp-report: a sweep's table and figures, a run's report, or runs side by side."""
    parser = argparse.ArgumentParser(
        prog="gradexp-report",
        description="With a sweep directory: rebuild its table (sweep_table.csv/.json) and comparison "
        "figures (report/*.png). With a run directory: print its per-layer table and verdict again. "
        "With several run directories: put them side by side, in the terminal and in a figure. "
        "Any other directory: print the table of the runs below it, writing nothing.",
    )
    parser.add_argument(
        "directories", type=Path, nargs="+", metavar="directory", help="sweep or run directories"
    )
    parser.add_argument("--no-figures", action="store_true", help="print (and write) the tables only")
    parser.add_argument(
        "--figure",
        type=Path,
        default=Path(COMPARISON_FIGURE),
        help=f"where runs compared side by side draw their figure (default: ./{COMPARISON_FIGURE})",
    )
    parser.add_argument(
        "--activations",
        action="store_true",
        help="instead, draw every activation with its derivative into <directory>/activations.png",
    )
    args = parser.parse_args(argv)
    try:
        _report(args)
    except OSError as error:  # a directory that cannot be written, a file where a folder should be
        _error(f"{error.filename or args.directories[0]}: {error.strerror}")


def _report(args: argparse.Namespace) -> None:
    if args.activations:
        path = draw_activations(args.directories[0])
        print(f"figure: {relative_to_cwd(str(path))}")
        return
    for directory in args.directories:
        if not directory.is_dir():
            _error(f"{directory}: no such directory")
    if len(args.directories) > 1:
        _compare(args.directories, None if args.no_figures else args.figure)
        return
    directory = args.directories[0]
    if is_run(directory):
        _show_run(directory, draw=not args.no_figures)
        return
    table = build(directory)
    if not table.jobs:
        _error(f"{directory}: no gradexp runs in it (no summary.json or .hydra/ below it)")
    show(table, draw=not args.no_figures, write_files=is_sweep(directory))


def _show_run(run: Path, draw: bool) -> None:
    """A saved run's per-layer table, diagnosis and status, as it printed when it ended; and the
    end-of-run figures of a sweep's job that left them for later, drawn once."""
    summary = read_summary(run)
    if not summary:
        _error(f"{run}: no summary.json in it: the run is still going, or was killed before it wrote one")
    console = make_console()
    for part in run_report(summary, console.width):
        console.print(part, highlight=False)
    shown = relative_to_cwd(str(run))
    console.print(f"files:       {shown}")
    drawn = draw_job_figures(run) if draw else []
    if drawn:
        names = ", ".join(f"{name}.png" for name in drawn)
        console.print(f"figures:     {shown}/{RUN_FIGURES}/ ({names}, drawn now)")
    console.print(f"tensorboard: tensorboard --logdir {shown}")


def draw_job_figures(run: Path) -> list[str]:
    """The figures a sweep's job left for later (sweep.job_figures=false), drawn from what it
    saved into its figures/ and, as a new event file, TensorBoard's Images tab; their names.
    Nothing when the job saved nothing or its figures are drawn already."""
    data_file = run / FIGURE_DATA
    if not data_file.is_file() or (run / RUN_FIGURES).is_dir():
        return []
    images = TensorBoardSink(run)
    try:
        return draw_figures(FigureData.load(data_file), run, [images])
    finally:
        images.close()


def _compare(runs: list[Path], figure_path: Path | None) -> None:
    summaries = []
    for run in runs:
        if not is_run(run):
            _error(f"{run}: not a run directory (side by side compares runs; a sweep has its own table)")
        summaries.append(read_summary(run))
        if not summaries[-1]:
            _error(f"{run}: no summary.json in it: the run is still going, or was killed before it wrote one")
    console = make_console()
    for line in compare.legend([Path(relative_to_cwd(str(r))) for r in runs], summaries):
        console.print(line, highlight=False)
    for part in [
        *compare.layer_tables(summaries, console.width),
        *compare.outcome_table(summaries, console.width),
    ]:
        console.print(part)
    if figure_path is not None:
        figure_path.write_bytes(compare.figure(summaries))
        console.print(f"figure:      {relative_to_cwd(str(figure_path))}")


def _error(message: str) -> None:
    print(f"gradexp-report: error: {message}", file=sys.stderr)
    sys.exit(2)
