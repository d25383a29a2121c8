"""Runs side by side: `gradexp-report <run A> <run B> ...` puts saved runs' per-layer gradient
norms, back-propagated signals, verdicts and final losses next to each other, in the terminal
and as one figure. Everything comes from each run's summary.json; nothing in a run is written."""

from pathlib import Path

from omegaconf import OmegaConf
from rich.markup import escape
from rich.table import Table

from gradexp.models import describe
from gradexp.sinks.console import later_diagnostic_step
from gradexp.sinks.layout import Column, fmt, stacked_tables

# Per-layer summary keys compared, with their headings ({step} is filled in per run).
_PER_LAYER = (
    ("grad_norm_first", "grad step 0"),
    ("grad_norm_last", "grad step {last}"),
    ("grad_signal_first", "signal step {first_diagnostic}"),
    ("grad_signal_last", "signal step {last_diagnostic}"),
    ("update_ratio_last", "update ratio step {last_diagnostic}"),
)


def labels(count: int) -> list[str]:
    return [chr(ord("A") + i) if i < 26 else f"R{i}" for i in range(count)]


def legend(runs: list[Path], summaries: list[dict]) -> list[str]:
    """Which letter is which run, and what it trained."""
    lines = []
    for label, run, s in zip(labels(len(runs)), runs, summaries):
        try:
            what = describe(OmegaConf.create(s["config"]), s.get("device"), s.get("num_params"))
        except Exception:  # noqa: BLE001 (a summary from another version: say what it was run with)
            what = " ".join(s.get("overrides") or []) or "?"
        lines.append(f"{label}: {escape(str(run))}  {escape(what)}")
    return lines


def layer_tables(summaries: list[dict], width: int) -> list[Table]:
    """One row per layer (every run's layers, in order), a column per run for each per-layer
    key that some run measured."""
    layers = list(dict.fromkeys(layer for s in summaries for layer in s.get("layers", [])))
    columns, cells = [], {layer: [] for layer in layers}
    for key, heading in _PER_LAYER:
        for label, s in zip(labels(len(summaries)), summaries):
            if not s.get(key) or _repeats_first(s, key):
                continue
            columns.append(Column(f"{label} {heading.format(**_steps(s))}"))
            for layer in layers:
                cells[layer].append(fmt((s.get(key) or {}).get(layer)))
    rows = [[escape(layer), *row] for layer, row in cells.items()]
    title = "Per layer, run by run: gradient norm (weight matrix, L2) and back-propagated signal"
    return stacked_tables(title, [Column("layer", right=False)], columns, rows, width)


def outcome_table(summaries: list[dict], width: int) -> list[Table]:
    """Status, verdicts (when each was measured) and final losses, one row per run."""
    headings = [
        "status",
        "steps",
        "verdict",
        "verdict last",
        "chi_1 (theory)",
        "train loss",
        "val loss",
        "val acc",
    ]
    rows = []
    for label, s in zip(labels(len(summaries)), summaries):
        verdict = f"{s.get('verdict') or '-'} (step {s.get('verdict_step')})" if s.get("verdict") else "-"
        last = (
            f"{s.get('verdict_last')} (step {s.get('verdict_last_step')})" if s.get("verdict_last") else "-"
        )
        rows.append(
            [
                label,
                str(s.get("status", "-")),
                str(s.get("steps_completed", "-")),
                escape(verdict),
                escape(last),
                fmt(s.get("chi1_predicted")),
                fmt(s.get("final_train_loss")),
                fmt(s.get("final_val_loss")),
                fmt(s.get("final_val_acc")),
            ]
        )
    return stacked_tables("Outcome", [Column("run", right=False)], [Column(h) for h in headings], rows, width)


def figure(summaries: list[dict]) -> bytes:
    """Every run's gradient norm per layer at step 0 and its signal, on one log axis."""
    # matplotlib: imported where a figure is drawn (see diagnostics/figures.py)
    from gradexp.diagnostics import figures

    layers = list(dict.fromkeys(layer for s in summaries for layer in s.get("layers", [])))
    series = {}
    for label, s in zip(labels(len(summaries)), summaries):
        series[f"{label}: grad norm, step 0"] = s.get("grad_norm_first") or {}
        if s.get("grad_signal_first"):
            series[f"{label}: signal ||dL/dz||, step {s.get('verdict_step') or 0}"] = s["grad_signal_first"]
    return figures.norm_against_depth(
        layers, series, title="runs compared: per-layer norms at initialization"
    )


def _repeats_first(s: dict, key: str) -> bool:
    """A run's `_last` values measured at the same step as its `_first` ones (a one-step run)."""
    if key == "grad_norm_last":
        return s.get("last_recorded_step") in (None, 0)
    return key == "grad_signal_last" and later_diagnostic_step(s) is None


def _steps(s: dict) -> dict:
    return {
        "last": s.get("last_recorded_step"),
        "first_diagnostic": s.get("verdict_step") or 0,
        "last_diagnostic": s.get("verdict_last_step"),
    }
