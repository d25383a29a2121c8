"""The comparison figures of a sweep, drawn from its jobs' files: gradient norm against depth at
step 0 for every configuration, and per repeated block (a ResNet's stages, a Transformer's
blocks) where the model has them, the share of exactly-zero gradient entries per layer where
some are (float16's underflow), an RNN's gradient through time, the training loss over steps,
the final loss as a heatmap over two swept axes, and each job's gradient flow over training, on
one shared colour scale. A sweep over several seeds draws a line per configuration, the mean over
its seeds, within a band from their least to their greatest value, its heatmap cells give the
mean and standard deviation over the seeds, and its gradient flow is a panel per configuration,
the mean over its seeds."""

import functools
import itertools
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.ticker import MaxNLocator
from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
from tensorboard.compat.proto.event_pb2 import Event

from gradexp.diagnostics.figures import log10_or_nan, log_axis, margins, subplots, to_png, viridis
from gradexp.run_files import EVENTS_GLOB
from gradexp.sweeps.groups import SEED_KEY, Group, Spread, group_jobs
from gradexp.sweeps.table import Job, Table

MAX_PANELS = 36  # small multiples beyond this are unreadable; the first ones are drawn
MAX_AXIS_VALUES = 24  # a heatmap axis with more values (a search's floats) is no grid: not drawn


def draw_all(table: Table, folder: Path) -> list[Path]:
    """Every figure the table's jobs allow, written to `folder`; the paths written."""
    figures = {
        "norm_vs_depth": norm_vs_depth(table),
        "block_norm_vs_depth": block_norm_vs_depth(table),
        "grad_zero_vs_depth": grad_zero_vs_depth(table),
        "grad_through_time": through_time(table),
        "training_loss": training_loss(table),
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


def status_label(job: Job, table: Table) -> str:
    """The job's label, with its status when it did not complete ("lr=10 (diverged)")."""
    return label(job, table) + ("" if job.status == "completed" else f" ({job.status})")


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
    fig, axes = subplots(1, len(panels), figsize=(7 * len(panels) + 2, 5), squeeze=False)
    margins(fig, left=0.8, wspace=0.15)
    for ax, (key, title) in zip(axes[0], panels):
        _line_per_job(ax, jobs, table, lambda job, key=key: _plotted((job.summary.get(key) or {}).values()))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("layer (input to output)")
        ax.set_title(f"{title} at step 0")
    axes[0][-1].legend(fontsize=6, ncol=max(1, len(jobs) // 12), loc="best")
    return to_png(fig)


def block_norm_vs_depth(table: Table) -> bytes | None:
    """One line per configuration with repeated blocks: each block's gradient norm at step 0
    against its index, input to output. Where the layers are too many to read, the blocks show
    the trend: at initialization a Post-LN Transformer's hold up toward the output while a
    Pre-LN one's shrink there (Xiong et al. 2020). A deeper job's line reaches further right."""
    jobs = [j for j in table.jobs if j.summary.get("block_grad_norm_first")]
    if not jobs:
        return None
    fig, ax = subplots(figsize=(9, 5))
    margins(fig)
    _line_per_job(ax, jobs, table, _block_norms)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("block (input to output)")
    ax.set_ylabel("||dL/dθ|| over the block's parameters")
    ax.set_title("gradient norm per block at step 0")
    ax.legend(fontsize=6, ncol=max(1, len(jobs) // 12), loc="best")
    return to_png(fig)


def grad_zero_vs_depth(table: Table) -> bytes | None:
    """One line per configuration: each layer's share of exactly-zero weight-gradient entries at
    step 0 and at the last diagnostic step. Drawn for a sweep with a job in reduced precision
    and some share above zero: in float16 without a loss scale, the layers where the gradient
    was lost to underflow (float32's zeros, from dead units, have the `dead` signal)."""
    jobs = [j for j in table.jobs if j.summary.get("grad_zero_first") and not _no_depth_axis(j)]
    keys = ("grad_zero_first", "grad_zero_last")
    reduced = any(j.summary.get("precision") not in (None, "32") for j in jobs)
    if not reduced or not any(v for j in jobs for key in keys for v in (j.summary.get(key) or {}).values()):
        return None
    fig, axes = subplots(1, 2, figsize=(14, 5), sharey=True)
    margins(fig, wspace=0.05)
    for ax, key, when in zip(axes, keys, ("step 0", "the last diagnostic step")):
        values = lambda job, key=key: _plotted((job.summary.get(key) or {}).values())  # noqa: E731
        _line_per_job(ax, jobs, table, values, log=False)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("layer (input to output)")
        ax.set_title(f"exactly-zero weight-gradient entries at {when}")
    axes[0].set_ylabel("share of the layer's entries")
    axes[0].set_ylim(-0.03, 1.03)
    axes[-1].legend(fontsize=6, ncol=max(1, len(jobs) // 12), loc="best")
    return to_png(fig)


def through_time(table: Table) -> bytes | None:
    """One line per RNN configuration: ||dL/dh_t|| over the time steps t of its first recurrent
    layer, at step 0 (flat: the gradient reaches the first inputs; falling towards t = 1: it
    vanishes through time)."""
    jobs = [j for j in table.jobs if j.summary.get("grad_through_time_first")]
    if not jobs:
        return None
    fig, ax = subplots(figsize=(9, 5))
    margins(fig)
    first_layer = lambda job: _plotted(next(iter(job.summary["grad_through_time_first"].values())))  # noqa: E731
    _line_per_job(ax, jobs, table, first_layer, marker=None)
    ax.set_xlabel("time step t")
    ax.set_ylabel("||dL/dh_t|| at step 0")
    ax.set_title("gradient through time, first recurrent layer, per configuration")
    ax.legend(fontsize=6, ncol=max(1, len(jobs) // 12), loc="best")
    return to_png(fig)


def training_loss(table: Table) -> bytes | None:
    """One curve per job, the training loss over steps: whether a configuration whose gradients
    look healthy also learns, and how fast. A job that did not complete ends in a cross where its
    finite values end (a diverged job's last loss is no number to draw), or in an arrowhead on the
    top edge where it went off the axis."""
    curves = loss_curves(table)
    if not curves:
        return None
    fig, ax = subplots(figsize=(9, 5))
    margins(fig)
    colours = viridis(0, 0.95, len(curves))
    for (job, steps, values), colour in zip(curves, colours):
        one = "o" if len(steps) == 1 else None  # a single point is no line: mark it
        ax.plot(steps, values, color=colour, label=status_label(job, table), marker=one, markersize=3)
    _loss_axis(ax, curves)
    ceiling = ax.get_ylim()[1]
    for (job, steps, values), colour in zip(curves, colours):
        if job.status != "completed":  # where it ended: a cross, or an arrowhead on the top edge
            end, marker = (values[-1], "x") if values[-1] <= ceiling else (ceiling, "^")
            ax.plot(steps[-1], end, marker=marker, markersize=6, color=colour, clip_on=False)
    floors = {job.summary.get("loss_floor") for job, _, _ in curves} - {None}
    if len(floors) == 1:  # one source (task=tokens): the least loss any model can reach, in view
        floor = floors.pop()
        ax.axhline(
            floor, color="grey", linestyle="--", linewidth=1, label="loss floor (the source's entropy)"
        )
        low, high = ax.get_ylim()
        margin = floor / 1.1 if ax.get_yscale() == "log" else floor - 0.05 * (high - low)
        ax.set_ylim(min(low, margin), high)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (loss/train)")
    capped = len(curves) == MAX_PANELS and len(table.jobs) > MAX_PANELS
    ax.set_title("training loss per configuration" + (f" (the first {MAX_PANELS} jobs)" if capped else ""))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6, ncol=max(1, len(curves) // 12), loc="best")
    return to_png(fig)


def loss_curves(table: Table) -> list[tuple[Job, list[int], list[float]]]:
    """(job, steps, values) of loss/train for the first MAX_PANELS jobs that logged it (more
    curves make the legend unreadable), finite values only: a diverged job's curve stops there."""
    curves = []
    for job in table.jobs:
        if len(curves) == MAX_PANELS:
            break
        points = read_series(job.path, lambda tag: tag == "loss/train").get("loss/train", {})
        finite = sorted((step, v) for step, v in points.items() if math.isfinite(v))
        if finite:
            curves.append((job, [step for step, _ in finite], [v for _, v in finite]))
    return curves


def _loss_axis(ax, curves: list[tuple[Job, list[int], list[float]]]) -> None:
    """The y axis the jobs that did not diverge need: a diverging job's blow-up (1e20) goes off
    the top rather than flatten the others into a line. Log only if what is shown is positive and
    spans more than a decade."""
    every = [v for _, _, values in curves for v in values]
    top = max([v for job, _, values in curves if job.status != "diverged" for v in values] or every)
    shown = [v for v in every if v <= top]
    log = min(shown) > 0 and top > 10 * min(shown)
    if log:
        log_axis(ax)
    if top == max(every):
        return  # nothing off the axis: matplotlib's own limits
    low = min(shown)
    if log:
        pad = (top / low) ** 0.05
        ax.set_ylim(low / pad, top * pad)
    else:
        pad = 0.05 * (top - low) or 0.05 * abs(top) or 1.0
        ax.set_ylim(low - pad, top + pad)


def final_loss_heatmap(table: Table, metric: str = "final_train_loss") -> bytes | None:
    """The final loss over the first two swept keys (one panel per value of any further keys);
    a diverged or failed job is a grey cell with its status, never a made-up number. Over
    several seeds a cell is a configuration's: the mean and standard deviation over the seeds
    that completed (and how many did, when not all)."""
    keys = [k for k in table.swept if k != SEED_KEY]
    if not keys or not table.jobs:
        return None
    rows_key, cols_key, rest = keys[0], (keys[1:2] or [None])[0], keys[2:]
    rows = _values(table, rows_key)
    cols = _values(table, cols_key) if cols_key else [None]
    if max(len(rows), len(cols)) > MAX_AXIS_VALUES:
        return None
    panels = list(itertools.product(*(_values(table, k) for k in rest)))[:MAX_PANELS]
    columns = min(len(panels), 3)
    fig, axes = subplots(
        math.ceil(len(panels) / columns),
        columns,
        figsize=(1.2 * len(cols) * columns + 3, 0.5 * len(rows) * math.ceil(len(panels) / columns) + 2),
        squeeze=False,
        layout="constrained",
    )
    cells = _cells(table, metric, keys)
    finite = [value for value, _ in cells.values() if value is not None]
    vmin, vmax = (min(finite), max(finite)) if finite else (0.0, 1.0)
    for ax, panel in zip(axes.flat, panels):
        fixed = dict(zip(rest, panel))
        grid = np.full((len(rows), len(cols)), np.nan)
        for i, j in itertools.product(range(len(rows)), range(len(cols))):
            want = {rows_key: rows[i], **({cols_key: cols[j]} if cols_key else {}), **fixed}
            cell = cells.get(tuple(want.get(k) for k in keys))
            if cell is None:
                continue
            value, text = cell
            colour = "black"
            if value is not None:
                grid[i, j] = value
                light = (value - vmin) / ((vmax - vmin) or 1) > 0.6  # viridis turns yellow
                colour = "black" if light else "white"
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color=colour)
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


def _cells(table: Table, metric: str, keys: list[str]) -> dict[tuple, tuple[float | None, str]]:
    """(value, text) per configuration (its values of `keys`): a completed job's value; over
    several seeds, the mean over those that completed, written with its spread. No value where
    none completed: the text is then what happened to it."""
    if not table.seeded():
        cells = {}
        for job in table.jobs:
            value = job.summary.get(metric)
            done = job.status == "completed" and _finite(value)
            cells.setdefault(
                tuple(job.overrides.get(k) for k in keys),
                (value, f"{value:.3g}") if done else (None, job.status),
            )
        return cells
    cells = {}
    for group in table.groups():
        spread = Spread.of([j.summary.get(metric) for j in group.jobs if j.status == "completed"])
        if spread is None:
            text = "\n".join(f"{n} {status}" for status, n in group.statuses().items())
            cells[tuple(group.values[k] for k in keys)] = (None, text)
            continue
        text = spread.text().replace(" ± ", "\n± ")
        if spread.n < len(group.jobs):
            text += f"\n({spread.n}/{len(group.jobs)} seeds)"
        cells[tuple(group.values[k] for k in keys)] = (spread.mean, text)
    return cells


@dataclass
class Flow:
    """One panel of the sweep's gradient flow: a job's, or over several seeds a configuration's."""

    title: str
    layers: list[str]
    steps: list[int]
    grid: np.ndarray  # log10 of the gradient norm, layers by steps (NaN where there is none)


def flow_panels(table: Table) -> list[Flow]:
    """The gradient flow's panels: one per job, or over several seeds one per configuration,
    whose colour at each layer and step is the mean of the seeds' log10 norms (a geometric mean,
    as the line figures draw) over the seeds that recorded a finite norm there. A panel per seed
    would show the same picture again and again, and a grid of many seeds would run out of
    panels before it ran out of configurations."""
    if not table.seeded():
        flows = [(job, read_norm_history(job.path)) for job in table.jobs[:MAX_PANELS]]
        return [
            Flow(status_label(job, table), layers, steps, log10_or_nan(matrix).T)
            for job, (layers, steps, matrix) in flows
            if steps
        ]
    panels = []
    for group in table.groups()[:MAX_PANELS]:
        histories = [read_norm_history(job.path) for job in group.jobs]
        histories = [h for h in histories if h[1]]
        if histories:
            panels.append(_mean_flow(group, histories))
    return panels


def _mean_flow(group: Group, histories: list[tuple[list[str], list[int], list[list[float]]]]) -> Flow:
    """The seeds' flows on the union of their steps, averaged in log10."""
    layers = max((h[0] for h in histories), key=len)
    steps = sorted({step for _, seed_steps, _ in histories for step in seed_steps})
    column = {step: i for i, step in enumerate(steps)}
    stacked = np.full((len(histories), len(layers), len(steps)), np.nan)
    for seed, (seed_layers, seed_steps, matrix) in enumerate(histories):
        logs = log10_or_nan(matrix).T
        for row, name in enumerate(seed_layers):
            stacked[seed, layers.index(name), [column[s] for s in seed_steps]] = logs[row]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a point no seed recorded: a gap
        grid = np.nanmean(stacked, axis=0)
    statuses = group.statuses()
    how = ", ".join(f"{n} {s}" for s, n in statuses.items()) if set(statuses) != {"completed"} else ""
    seeds = f"mean of {len(histories)} seeds" + (f"; {how}" if how else "")
    return Flow(f"{group.name} ({seeds})", layers, steps, grid)


def gradient_flows(table: Table) -> bytes | None:
    """Each job's (or configuration's) gradient flow (layers by steps, log10 norm), on one colour
    scale so that the panels compare."""
    flows = flow_panels(table)
    if not flows:
        return None
    wanted = _panel_count(table)  # beyond MAX_PANELS, the figure says which it drew
    finite = np.concatenate([flow.grid[np.isfinite(flow.grid)] for flow in flows])
    # the 1st to 99th percentile: a diverging job's last steps must not wash the others out
    vmin, vmax = np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0)
    columns = min(len(flows), 4)
    rows = math.ceil(len(flows) / columns)
    width, height = 3.2 * columns + 1, max(2.6 * rows, 3.2)  # one row: room for the y label
    fig, axes = subplots(rows, columns, figsize=(width, height), squeeze=False)
    # constrained layout would measure every tick label of every panel (see margins): a
    # twentieth of a second a panel, which a large sweep pays per job
    margins(fig, left=0.7, right=0.3, top=0.35 + 0.2 * (wanted > MAX_PANELS), hspace=0.5, wspace=0.3)
    for ax, flow in zip(axes.flat, flows):
        extent = (flow.steps[0] - 0.5, flow.steps[-1] + 0.5, 0.5, len(flow.layers) + 0.5)
        image = ax.imshow(
            flow.grid,
            aspect="auto",
            origin="lower",
            cmap="viridis",
            vmin=vmin,
            vmax=vmax,
            extent=extent,
            interpolation="nearest",
        )
        # y=1.0: where matplotlib would place it, without its search for tick labels in the way
        ax.set_title(flow.title, fontsize=7, y=1.0)
        ax.tick_params(labelsize=6)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in list(axes.flat)[len(flows) :]:
        ax.set_axis_off()
    fig.supxlabel("step")
    fig.supylabel("layer (input at the bottom)")
    if wanted > MAX_PANELS:
        kind = "configurations" if table.seeded() else "jobs"
        fig.suptitle(f"the first {MAX_PANELS} {kind} of {wanted}", fontsize=8)
    fig.colorbar(image, ax=axes, label="log10 ||dL/dW||")
    return to_png(fig)


def _panel_count(table: Table) -> int:
    """The panels the flow would have without the cap: jobs, or configurations over seeds."""
    return len(table.groups()) if table.seeded() else len(table.jobs)


def read_norm_history(run_dir: Path) -> tuple[list[str], list[int], list[list[float]]]:
    """The per-layer gradient norms a run logged, from its event files: layer names, steps, and
    a row of norms per step (NaN where a layer's value is missing)."""
    series = read_series(run_dir, lambda tag: tag.startswith("grad_norm/") and tag[10:13].isdigit())
    layers = sorted(tag[10:] for tag in series)  # "grad_norm/total" is no layer: it has no number
    steps = sorted({step for points in series.values() for step in points})
    return layers, steps, [[series[f"grad_norm/{layer}"].get(s, math.nan) for layer in layers] for s in steps]


def read_series(run_dir: Path, wanted: Callable[[str], bool]) -> dict[str, dict[int, float]]:
    """tag -> {step: value} for the scalar tags `wanted` accepts, from a run's event files, read
    directly (TensorBoard's EventAccumulator samples long series down). The files are read in the
    order they were written, so where a resumed run logged a step again, its later value wins."""
    found = [(str(p), p.stat()) for p in sorted(run_dir.glob(EVENTS_GLOB))]
    files = tuple((path, stat.st_size, stat.st_mtime_ns) for path, stat in found)
    return {tag: points for tag, points in _scalars(files).items() if wanted(tag)}


@functools.lru_cache(maxsize=2 * MAX_PANELS)
def _scalars(files: tuple[tuple[str, int, int], ...]) -> dict[str, dict[int, float]]:
    """Every scalar series of these event files (path, size, modification time): each figure
    asks for its own tags, and a job's files are read once for all of them (their checksums are
    verified in Python, a few milliseconds a job), again only once they change."""
    series: dict[str, dict[int, float]] = {}
    for path, _, _ in files:
        for raw in RawEventFileLoader(path).Load():
            event = Event.FromString(raw)
            for value in event.summary.value:
                if value.WhichOneof("value") == "simple_value":
                    series.setdefault(value.tag, {})[event.step] = value.simple_value
    return series


def _line_per_job(
    ax, jobs: list[Job], table: Table, values_of: Callable, marker: str | None = "o", log: bool = True
) -> None:
    """One line per job on a log axis (or linear): values_of(job) against 1, 2, ..., coloured
    along viridis in the jobs' order, so a job has the same colour in every panel. Over several
    seeds, a line per configuration instead: see `_line_per_group`."""
    if table.seeded():
        _line_per_group(ax, group_jobs(jobs, table.swept), values_of, marker, log)
        return
    colours = viridis(0, 0.95, len(jobs))
    for job, colour in zip(jobs, colours):
        values = values_of(job)
        x = np.arange(1, len(values) + 1)
        ax.plot(x, values, marker=marker, markersize=2, color=colour, label=label(job, table))
    if log:
        log_axis(ax)
    ax.grid(True, which="both", alpha=0.3)


def _line_per_group(ax, groups: list[Group], values_of: Callable, marker: str | None, log: bool) -> None:
    """A configuration's seeds as one line, their mean (geometric on a log axis: the values span
    decades), in a band from the least to the greatest seed's value at each point."""
    colours = viridis(0, 0.95, len(groups))
    for group, colour in zip(groups, colours):
        lines = [np.asarray(values_of(job), dtype=float) for job in group.jobs]
        grid = np.full((len(lines), max(len(v) for v in lines)), np.nan)
        for row, values in zip(grid, lines):
            row[: len(values)] = values
        if log:
            grid[~(grid > 0)] = np.nan  # a zero or a gap has no logarithm
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a point no seed has: a gap
            centre = np.exp(np.nanmean(np.log(grid), axis=0)) if log else np.nanmean(grid, axis=0)
            low, high = np.nanmin(grid, axis=0), np.nanmax(grid, axis=0)
        x = np.arange(1, grid.shape[1] + 1)
        name = f"{group.name} ({len(group.jobs)} seeds)"
        ax.plot(x, centre, marker=marker, markersize=2, color=colour, label=name)
        ax.fill_between(x, low, high, color=colour, alpha=0.2, linewidth=0)
    how = "line: the mean over the seeds (geometric); band: the least to the greatest seed's value"
    ax.text(0.01, 0.01, how if log else how.replace(" (geometric)", ""), transform=ax.transAxes, fontsize=7)
    if log:
        log_axis(ax)
    ax.grid(True, which="both", alpha=0.3)


def _plotted(values) -> list[float]:
    """The values as drawn: a missing one (None in the summary) is NaN, a gap in the line."""
    return [math.nan if v is None else v for v in values]


def _block_norms(job: Job) -> list[float]:
    """The job's block gradient norms at step 0, input to output as the summary lists them."""
    return _plotted(job.summary["block_grad_norm_first"].values())


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
