"""The terminal: a progress bar while training, then per-layer gradient norms and the status."""

import math
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from gradexp.recorder import StepRecord


class ConsoleSink:
    def __init__(self, steps: int, console: Console | None = None):
        self.console = console or Console()
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
                    grad=fmt(record.scalars["grad_norm/total"]),
                )

    def close(self) -> None:
        self._progress.stop()

    def finish(self, summary: dict, run_dir: str) -> None:
        self.close()
        self.console.print(_layer_table(summary))
        for line in _diagnosis(summary):
            self.console.print(line)
        self.console.print(_status_line(summary))
        shown = relative_to_cwd(run_dir)
        self.console.print(f"files:       {shown}")
        self.console.print(f"tensorboard: tensorboard --logdir {shown}")


# Optional per-layer columns: (summary key, heading), shown when the run measured them.
_SIGNAL_COLUMNS = [
    ("grad_signal_first", "signal ||dL/dz|| 0"),
    ("act_std_first", "act std 0"),
    ("saturation_first", "saturated 0"),
    ("saturation_last", "saturated last"),
    ("dead_first", "dead 0"),
    ("dead_last", "dead last"),
    ("update_ratio_last", "update ratio last"),
]


def _layer_table(summary: dict) -> Table:
    first, last = summary["grad_norm_first"], summary["grad_norm_last"]
    columns = [(key, heading) for key, heading in _SIGNAL_COLUMNS if summary.get(key)]
    table = Table(title="Per layer: gradient norm (weight matrix, L2) and what explains it")
    table.add_column("layer")
    table.add_column("grad 0", justify="right")
    table.add_column(f"grad {summary['last_recorded_step']}", justify="right")
    table.add_column("last / first", justify="right")
    for _, heading in columns:
        table.add_column(heading, justify="right")
    for layer in summary["layers"]:
        a, b = first.get(layer), last.get(layer)
        ratio = b / a if a and b is not None and math.isfinite(b) else None
        extra = [fmt(summary[key].get(layer)) for key, _ in columns]
        table.add_row(layer, fmt(a), fmt(b), fmt(ratio), *extra)
    return table


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
            f"measured: the squared signal changes by {fmt(s['signal_factor_measured'])} per layer "
            f"at step 0 -> {verdict}"
        )
    ratios = s.get("grad_through_time_ratio_first") or {}
    for layer, ratio in ratios.items():
        lines.append(f"gradient through time ({layer}): ||dL/dh_1|| / ||dL/dh_T|| = {fmt(ratio)} at step 0")
    if ratios:
        lines.append(f"measured, most extreme recurrent layer -> {verdict}")
    for layer, sigma in (s.get("spectral_norm_first") or {}).items():
        lines.append(
            f"largest singular value of {layer}: {fmt(sigma)} -> {fmt(s['spectral_norm_last'].get(layer))}"
        )
    if s.get("clip_fraction") is not None:
        lines.append(f"clipping: {100 * s['clip_fraction']:.0f}% of steps were clipped")
    return lines


def relative_to_cwd(path: str) -> str:
    """Show the run directory as the user would type it from where they stand."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return path


def _status_line(s: dict) -> str:
    colour = {"completed": "green", "diverged": "yellow"}.get(s["status"], "red")
    line = f"status: [bold {colour}]{s['status']}[/] after {s['steps_completed']} steps"
    if s["status"] == "diverged":
        line += f"; non-finite at step {s['diverged_step']} (first layer: {s['first_nonfinite_layer']})"
    if s.get("final_val_loss") is not None:
        line += f"; val loss {fmt(s['final_val_loss'])}"
    if s.get("final_val_acc") is not None:
        line += f", val acc {s['final_val_acc']:.3f}"
    if s.get("error"):
        line += f"; error: {s['error']}"
    return line


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if not math.isfinite(value):
        return str(value)
    return f"{value:.3g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
