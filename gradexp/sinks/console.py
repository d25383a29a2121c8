"""The terminal: a progress bar while training, then per-layer gradient norms and the status."""

import io
import math
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from gradexp.measurements.catalog import layer_columns
from gradexp.recorder import StepRecord
from gradexp.sinks.base import Sink
from gradexp.sinks.layout import PIPE_WIDTH, Column, fmt, make_console, stacked_tables


class ConsoleSink(Sink):
    def __init__(self, steps: int, run_dir: str, console: Console | None = None):
        self.console = console or make_console()
        self.run_dir = run_dir
        self._progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}  |grad| {task.fields[grad]}"),
            TimeRemainingColumn(),
            console=self.console,
            refresh_per_second=4,
        )
        self._task = self._progress.add_task("train", total=steps, loss="-", grad="-")

    def start(self, header: str) -> None:
        self.console.print(header)
        self._progress.start()

    def write(self, records: list[StepRecord]) -> None:
        for record in records:
            if "loss/train" in record.scalars:  # evaluation-only records do not move the bar
                self._progress.update(
                    self._task,
                    completed=record.step + 1,
                    loss=fmt(record.scalars["loss/train"]),
                    grad=fmt(record.scalars.get("grad_norm/total")),  # none at a skipped step
                )

    def close(self) -> None:
        self._progress.stop()

    def finish(self, summary: dict) -> None:
        self.close()
        for part in run_report(summary, self.console.width):
            self.console.print(part, highlight=False)
        shown = relative_to_cwd(self.run_dir)
        self.console.print(f"files:       {shown}")
        self.console.print(f"tensorboard: tensorboard --logdir {shown}")


def run_report(summary: dict, width: int) -> list:
    """What a run's end shows: the per-layer table(s), the diagnosis and the status line; also
    what `gradexp-report <run dir>` prints again from summary.json, and what gradexp.log keeps."""
    return [*_tables(summary, width), *_diagnosis(summary), _status_line(summary)]


def report_text(summary: dict) -> str:
    """The run report as plain text, for the log file."""
    console = Console(file=io.StringIO(), width=PIPE_WIDTH, color_system=None, force_terminal=False)
    for part in run_report(summary, PIPE_WIDTH):
        console.print(part, highlight=False)
    return console.file.getvalue()


LAYER_ROWS = 40  # more layers than this, in a network with blocks: the per-block table alone


def _tables(summary: dict, width: int) -> list:
    """The per-layer table, and for a network with blocks the per-block one; a network with
    hundreds of layers shows its blocks alone (every layer is in summary.json and TensorBoard)."""
    blocks = summary.get("blocks") or []
    if not blocks:
        return _layer_tables(summary, width)
    if len(summary["layers"]) <= LAYER_ROWS:
        return [*_layer_tables(summary, width), *_block_tables(summary, width)]
    note = (
        f"{len(summary['layers'])} layers in {len(blocks)} blocks: per block below; "
        "every layer's norms are in summary.json and TensorBoard (grad_norm/<layer>)"
    )
    return [note, *_block_tables(summary, width)]


def _block_tables(summary: dict, width: int) -> list[Table]:
    """Per block: the gradient norm over its parameters at the first and last recorded steps, and
    along the residual stream, the forward std and the gradient at its output."""
    columns, cells = _norm_columns(
        summary["blocks"],
        summary.get("block_grad_norm_first") or {},
        summary.get("block_grad_norm_last") or {},
        summary["last_recorded_step"],
    )
    step = f"step {summary.get('verdict_step') or 0}"
    for key, heading in (("resid_std_first", "stream std"), ("resid_grad_first", "stream ||dL/dx||")):
        if summary.get(key):
            columns.append(Column(f"{heading} {step}"))
            for block, row in cells.items():
                row.append(fmt(summary[key].get(block)))
    rows = [[escape(block), *row] for block, row in cells.items()]
    title = "Per block: gradient norm (its parameters, L2) and the residual stream at its output"
    return stacked_tables(title, [Column("block", right=False)], columns, rows, width)


def _norm_columns(names: list[str], first: dict, last: dict, last_step: int | None):
    """The gradient-norm columns of a per-layer or per-block table: at step 0, and where the run
    recorded later steps, at the last one and its ratio to step 0 (a change over time). Returns
    the columns and, by name, each row's cells so far."""
    columns = [Column("grad step 0")]
    cells = {name: [fmt(first.get(name))] for name in names}
    if last_step not in (None, 0):
        columns += [Column(f"grad step {last_step}"), Column(f"step {last_step} / step 0")]
        for name, row in cells.items():
            a, b = first.get(name), last.get(name)
            row += [fmt(b), fmt(b / a if a and b is not None and math.isfinite(b) else None)]
    return columns, cells


def _layer_tables(summary: dict, width: int) -> list[Table]:
    """Per layer: the weight gradient's norm at the first and last recorded steps, their ratio
    (a change over time, not over depth), and the signals that explain them."""
    steps = {
        "first": f"step {summary.get('verdict_step') or 0}",
        "last": f"step {summary.get('verdict_last_step')}",
    }
    columns, cells = _norm_columns(
        summary["layers"],
        summary["grad_norm_first"],
        summary["grad_norm_last"],
        summary["last_recorded_step"],
    )
    one_diagnostic_step = later_diagnostic_step(summary) is None
    for key, heading in layer_columns():
        twin = key.replace("_last", "_first")
        if one_diagnostic_step and twin != key and summary.get(twin):
            continue  # the last diagnostic step is the first: its column is there already
        if summary.get(key):
            columns.append(Column(heading.format(**steps)))
            for layer, row in cells.items():
                row.append(fmt(summary[key].get(layer)))
    rows = [[escape(layer), *row] for layer, row in cells.items()]
    title = "Per layer: gradient norm (weight matrix, L2) and what explains it"
    return stacked_tables(title, [Column("layer", right=False)], columns, rows, width)


def _diagnosis(s: dict) -> list[str]:
    """The verdict and the few numbers that support it."""
    lines = []
    verdict = f"[bold]{s['verdict']}[/]" if s.get("verdict") else "-"
    if s.get("chi1_predicted") is not None:
        scale = s["depth_scale_predicted"]
        lines.append(
            f"theory (mean field): chi_1 = {fmt(s['chi1_predicted'])} per layer"
            + (f", depth scale {fmt(scale)} layers" if scale is not None else "")
            + f" -> {s['verdict_predicted']}   ({s['theory_note']})"
        )
    elif s.get("theory_note"):
        lines.append(f"theory: {s['theory_note']}")
    if s.get("signal_factor_measured") is not None:
        lines.append(
            f"measured: the squared signal changes by {fmt(s['signal_factor_measured'])} {_per(s)} "
            f"at step {s.get('verdict_step') or 0} -> {verdict}" + _later_verdict(s)
        )
    ratios = s.get("grad_through_time_ratio_first") or {}
    for layer, ratio in ratios.items():
        lines.append(f"gradient through time ({layer}): ||dL/dh_1|| / ||dL/dh_T|| = {fmt(ratio)} at step 0")
    if ratios:
        lines.append(
            f"measured, most extreme recurrent layer, at step {s.get('verdict_step') or 0} -> {verdict}"
            + _later_verdict(s)
        )
    for layer, sigma in (s.get("spectral_norm_first") or {}).items():
        lines.append(
            f"largest singular value of {layer}: {fmt(sigma)} -> {fmt(s['spectral_norm_last'].get(layer))}"
        )
    if s.get("clip_fraction") is not None:
        lines.append(f"clipping: {100 * s['clip_fraction']:.0f}% of steps were clipped")
    lines += _loss_scale_lines(s)
    return lines


def _loss_scale_lines(s: dict) -> list[str]:
    """How often the loss scale skipped a step, and whether it collapsed."""
    if s.get("amp_skipped_steps") is None:
        return []
    skipped, scale = s["amp_skipped_steps"], s["amp_scale_last"]
    lines = [
        f"loss scale ({s['loss_scale']}, {s['precision']}): {skipped} step{'' if skipped == 1 else 's'} "
        f"skipped for an overflow; scale {fmt(scale)} at the last step"
    ]
    if s.get("amp_scale_collapsed"):
        lines.append(
            f"[bold red]loss scale collapsed[/]: {fmt(scale)}, and the last "
            f"{s['amp_skipped_in_a_row_at_end']} steps were all skipped: the gradient overflows "
            "float16 at any scale (an entry past 65504); try trainer.precision=bf16 or a lower lr"
        )
    elif isinstance(s["loss_scale"], float) and s.get("amp_skipped_in_a_row_at_end"):
        lines.append(
            f"[bold red]the last {s['amp_skipped_in_a_row_at_end']} steps were all skipped[/]: "
            "a fixed scale overflows again at every step; lower trainer.loss_scale or use dynamic"
        )
    return lines


def later_diagnostic_step(s: dict) -> int | None:
    """The last diagnostic step when it comes after the first (the step of `verdict_last` and of
    every `_last` signal); None for a run measured at one diagnostic step only."""
    step = s.get("verdict_last_step")
    return step if step is not None and step != s.get("verdict_step") else None


def _later_verdict(s: dict) -> str:
    """The verdict at the last diagnostic step, when there is one after the first: a network
    that starts vanishing may have learned its way out (or into it)."""
    step = later_diagnostic_step(s)
    if step is None or s.get("verdict_last") is None:
        return ""
    factor = s.get("signal_factor_measured_last")
    measured = f"{fmt(factor)} {_per(s)} " if factor is not None else ""
    return f"; at step {step}: {measured}-> [bold]{s['verdict_last']}[/]"


def _per(s: dict) -> str:
    """What the measured factor is per: a layer, or a block along the residual stream."""
    return "per block (along the residual stream)" if s.get("verdict_per") == "block" else "per layer"


def relative_to_cwd(path: str) -> str:
    """Show the run directory as the user would type it from where they stand."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return path


def _status_line(s: dict) -> str:
    colour = {"completed": "green", "diverged": "yellow"}.get(s["status"], "red")
    steps = s["steps_completed"]
    line = f"status: [bold {colour}]{s['status']}[/] after {steps} step{'' if steps == 1 else 's'}"
    if s["status"] == "diverged":
        line += f"; non-finite at step {s['diverged_step']} (first layer: {s['first_nonfinite_layer']})"
    if s.get("final_val_loss") is not None:
        line += f"; val loss {fmt(s['final_val_loss'])}"
        if s.get("loss_floor") is not None:  # what the source allows at best
            line += f" (floor {fmt(s['loss_floor'])})"
    if s.get("final_val_acc") is not None:
        line += f", val acc {s['final_val_acc']:.3f}"
    if s.get("error"):
        line += f"; error: {s['error']}"
    return line
