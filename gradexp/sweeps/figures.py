"""The comparison figures of a sweep, drawn from its jobs' files: gradient norm against depth at
step 0 for every configuration, the final loss as a heatmap over two swept axes, and each
job's gradient flow over training, on one shared colour scale."""

import itertools
import math
from pathlib import Path

import numpy as np
from matplotlib.ticker import MaxNLocator
from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
from tensorboard.compat.proto.event_pb2 import Event

from gradexp.diagnostics.figures import log10_or_nan, log_axis, plt, to_png
from gradexp.sweeps.table import Job, Table

MAX_PANELS = 36  # small multiples beyond this are unreadable; the first ones are drawn
MAX_AXIS_VALUES = 24  # a heatmap axis with more values (a search's floats) is no grid: not drawn


def draw_all(table: Table, folder: Path) -> list[Path]:
    """Every figure the table's jobs allow, written to `folder`; the paths written."""
    figures = {
        "norm_vs_depth": norm_vs_depth(table),
        "grad_through_time": through_time(table),
        "final_loss": final_loss_heatmap(table),
        "gradient_flow": gradient_flows(table),
    }
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, png in figures.items():
        if png is not None:
            path = folder / f"{name}.png"
            path.write_bytes(png)
            written.append(path)
    return written


def label(job: Job, table: Table) -> str:
    """The job's swept values, or its directory name when nothing was swept."""
    return ", ".join(f"{k}={job.overrides.get(k, '-')}" for k in table.swept) or job.name


def norm_vs_depth(table: Table) -> bytes | None:
    """One line per configuration, against depth at step 0: the weight-gradient norm, and beside
    it the back-propagated signal ||dL/dz|| where it was measured (the weight gradient can stay
    flat while the signal collapses). An RNN's matrices are no depth axis: its jobs are in the
    through-time figure instead."""
    jobs = [j for j in table.jobs if j.summary.get("grad_norm_first") and not _no_depth_axis(j)]
    if not jobs:
        return None
    panels = [("grad_norm_first", "weight gradient ||dL/dW||")]
    if any(j.summary.get("grad_signal_first") for j in jobs):
        panels.append(("grad_signal_first", "back-propagated signal ||dL/dz||"))
    fig, axes = plt.subplots(
        1, len(panels), figsize=(7 * len(panels) + 2, 5), squeeze=False, layout="constrained"
    )
    colours = plt.cm.viridis(np.linspace(0, 0.95, len(jobs)))
    for ax, (key, title) in zip(axes[0], panels):
        for job, colour in zip(jobs, colours):
            values = [math.nan if v is None else v for v in (job.summary.get(key) or {}).values()]
            x = np.arange(1, len(values) + 1)
            ax.plot(x, values, marker="o", markersize=2, color=colour, label=label(job, table))
        log_axis(ax)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("layer (input to output)")
        ax.set_title(f"{title} at step 0")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][-1].legend(fontsize=6, ncol=max(1, len(jobs) // 12), loc="best")
    return to_png(fig)


def through_time(table: Table) -> bytes | None:
    """One line per RNN configuration: ||dL/dh_t|| over the time steps t of its first recurrent
    layer, at step 0 (flat: the gradient reaches the first inputs; falling towards t = 1: it
    vanishes through time)."""
    jobs = [j for j in table.jobs if j.summary.get("grad_through_time_first")]
    if not jobs:
        return None
    fig, ax = plt.subplots(figsize=(9, 5), layout="constrained")
    colours = plt.cm.viridis(np.linspace(0, 0.95, len(jobs)))
    for job, colour in zip(jobs, colours):
        curve = next(iter(job.summary["grad_through_time_first"].values()))
        values = [math.nan if v is None else v for v in curve]
        ax.plot(np.arange(1, len(values) + 1), values, color=colour, label=label(job, table))
    log_axis(ax)
    ax.set_xlabel("time step t")
    ax.set_ylabel("||dL/dh_t|| at step 0")
    ax.set_title("gradient through time, first recurrent layer, per configuration")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6, ncol=max(1, len(jobs) // 12), loc="best")
    return to_png(fig)


def final_loss_heatmap(table: Table, metric: str = "final_train_loss") -> bytes | None:
    """The final loss over the first two swept keys (one panel per value of any further keys);
    a diverged or failed job is a grey cell with its status, never a made-up number."""
    if not table.swept or not table.jobs:
        return None
    rows_key, cols_key, rest = table.swept[0], (table.swept[1:2] or [None])[0], table.swept[2:]
    rows = _values(table, rows_key)
    cols = _values(table, cols_key) if cols_key else [None]
    if max(len(rows), len(cols)) > MAX_AXIS_VALUES:
        return None
    panels = list(itertools.product(*(_values(table, k) for k in rest)))[:MAX_PANELS]
    columns = min(len(panels), 3)
    fig, axes = plt.subplots(
        math.ceil(len(panels) / columns),
        columns,
        figsize=(1.2 * len(cols) * columns + 3, 0.5 * len(rows) * math.ceil(len(panels) / columns) + 2),
        squeeze=False,
        layout="constrained",
    )
    finite = [j.summary.get(metric) for j in table.jobs if _finite(j.summary.get(metric))]
    vmin, vmax = (min(finite), max(finite)) if finite else (0.0, 1.0)
    for ax, panel in zip(axes.flat, panels):
        fixed = dict(zip(rest, panel))
        grid = np.full((len(rows), len(cols)), np.nan)
        for i, j in itertools.product(range(len(rows)), range(len(cols))):
            want = {rows_key: rows[i], **({cols_key: cols[j]} if cols_key else {}), **fixed}
            job = next((x for x in table.jobs if all(x.overrides.get(k) == v for k, v in want.items())), None)
            if job is None:
                continue
            value = job.summary.get(metric)
            if job.status == "completed" and _finite(value):
                grid[i, j] = value
                light = (value - vmin) / ((vmax - vmin) or 1) > 0.6  # viridis turns yellow
                colour = "black" if light else "white"
                ax.text(j, i, f"{value:.3g}", ha="center", va="center", fontsize=7, color=colour)
            else:
                ax.text(j, i, job.status, ha="center", va="center", fontsize=7, color="black")
        ax.set_facecolor("#d0d0d0")  # the cells with no number
        image = ax.imshow(grid, cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto")
        ax.set_yticks(range(len(rows)), rows, fontsize=7)
        ax.set_ylabel(rows_key)
        ax.set_xticks(range(len(cols)), [c or "" for c in cols], fontsize=7)
        ax.set_xlabel(cols_key or "")
        ax.set_title(", ".join(f"{k}={v}" for k, v in fixed.items()) or metric.replace("_", " "), fontsize=8)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_axis_off()
    fig.colorbar(image, ax=axes, label=metric.replace("_", " "))
    return to_png(fig)


def gradient_flows(table: Table) -> bytes | None:
    """Each job's gradient flow (layers by steps, log10 norm), on one colour scale so that the
    panels compare."""
    flows = [(job, read_norm_history(job.path)) for job in table.jobs[:MAX_PANELS]]
    flows = [(job, flow) for job, flow in flows if flow[1]]
    if not flows:
        return None
    grids = [log10_or_nan(matrix).T for _, (_, _, matrix) in flows]
    finite = np.concatenate([g[np.isfinite(g)] for g in grids])
    # the 1st to 99th percentile: a diverging job's last steps must not wash the others out
    vmin, vmax = np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0)
    columns = min(len(flows), 4)
    fig, axes = plt.subplots(
        math.ceil(len(flows) / columns),
        columns,
        figsize=(3.2 * columns + 1, 2.6 * math.ceil(len(flows) / columns)),
        squeeze=False,
        layout="constrained",
    )
    for ax, (job, (layers, steps, _)), grid in zip(axes.flat, flows, grids):
        extent = (steps[0] - 0.5, steps[-1] + 0.5, 0.5, len(layers) + 0.5)
        image = ax.imshow(
            grid,
            aspect="auto",
            origin="lower",
            cmap="viridis",
            vmin=vmin,
            vmax=vmax,
            extent=extent,
            interpolation="nearest",
        )
        ax.set_title(
            label(job, table) + ("" if job.status == "completed" else f" ({job.status})"), fontsize=7
        )
        ax.tick_params(labelsize=6)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in list(axes.flat)[len(flows) :]:
        ax.set_axis_off()
    fig.supxlabel("step")
    fig.supylabel("layer (input at the bottom)")
    fig.colorbar(image, ax=axes, label="log10 ||dL/dW||")
    return to_png(fig)


def read_norm_history(run_dir: Path) -> tuple[list[str], list[int], list[list[float]]]:
    """The per-layer gradient norms a run logged, from its event files: layer names, steps, and
    a row of norms per step (NaN where a layer's value is missing)."""
    by_step: dict[int, dict[str, float]] = {}
    for path in sorted(run_dir.glob("events.out.tfevents.*")):
        for raw in RawEventFileLoader(str(path)).Load():
            event = Event.FromString(raw)
            for value in event.summary.value:
                tag = value.tag
                if tag.startswith("grad_norm/") and tag[10:13].isdigit():
                    by_step.setdefault(event.step, {})[tag[10:]] = value.simple_value
    layers = sorted({layer for norms in by_step.values() for layer in norms})
    steps = sorted(by_step)
    return layers, steps, [[by_step[s].get(layer, math.nan) for layer in layers] for s in steps]


def _no_depth_axis(job: Job) -> bool:
    """Its layers are no depth (an RNN's matrices; its model's spec says so in the summary)."""
    return job.summary.get("depth_axis") is False


def _values(table: Table, key: str) -> list[str]:
    """The key's values: in numeric order when they are all numbers, else in the order the jobs
    ran (a sweep lists them as the user typed them)."""
    values = list(dict.fromkeys(j.overrides[key] for j in table.jobs if key in j.overrides))
    try:
        return sorted(values, key=float)
    except ValueError:
        return values


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
