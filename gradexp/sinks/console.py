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
                    loss=_fmt(record.scalars["loss/train"]),
                    grad=_fmt(record.scalars["grad_norm/total"]),
                )

    def close(self) -> None:
        self._progress.stop()

    def finish(self, summary: dict, run_dir: str) -> None:
        self.close()
        first, last = summary["grad_norm_first"], summary["grad_norm_last"]
        table = Table(title="Gradient norm per layer (weight matrix, L2)")
        table.add_column("layer")
        table.add_column("step 0", justify="right")
        table.add_column(f"step {summary['last_recorded_step']}", justify="right")
        table.add_column("last / first", justify="right")
        for layer in summary["layers"]:
            a, b = first.get(layer), last.get(layer)
            ratio = b / a if a and b is not None and math.isfinite(b) else None
            table.add_row(layer, _fmt(a), _fmt(b), _fmt(ratio))
        self.console.print(table)
        self.console.print(_status_line(summary))
        shown = _relative_to_cwd(run_dir)
        self.console.print(f"files:       {shown}")
        self.console.print(f"tensorboard: tensorboard --logdir {shown}")


def _relative_to_cwd(path: str) -> str:
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
        line += f"; val loss {_fmt(s['final_val_loss'])}"
    if s.get("final_val_acc") is not None:
        line += f", val acc {s['final_val_acc']:.3f}"
    if s.get("error"):
        line += f"; error: {s['error']}"
    return line


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if not math.isfinite(value):
        return str(value)
    return f"{value:.3g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
