"""Figures drawn at the end of a run, as PNG bytes for TensorBoard and for the run directory:
gradient flow (layer by step), gradient norm against depth, and an RNN's gradient through time.

This module and sweeps/figures.py are imported inside the functions that draw, not at the top
of the modules that call them: matplotlib takes 0.4 s to import, which a process that draws no
figure (a sweep's job, whose figures wait for `gradexp-report`, or a run with figures off)
need not pay."""

import io
import math

import matplotlib
import matplotlib.ticker
import numpy as np
from matplotlib.figure import Figure

MAX_LAYER_LABELS = 12


def subplots(*grid, figsize=None, layout=None, **axes):
    """A figure and its axes, as `pyplot.subplots` makes them but without pyplot: rendered by
    Agg into memory, whatever backend the user's session chose (a notebook's stays theirs),
    with no window opened and nothing to close."""
    fig = Figure(figsize=figsize, layout=layout)
    return fig, fig.subplots(*grid, **axes)


def margins(fig, left=1.0, right=0.25, bottom=0.6, top=0.4, **space) -> None:
    """The figure's margins in inches (room for the tick labels, an axis label and a title),
    set once. Constrained layout would find them by measuring every tick label before the
    drawing measures them again: 0.05 to 0.1 s a figure, which a sweep pays at its end."""
    width, height = fig.get_size_inches()
    fig.subplots_adjust(
        left=left / width, right=1 - right / width, bottom=bottom / height, top=1 - top / height, **space
    )


def viridis(start: float, stop: float, n: int) -> np.ndarray:
    """n colours along viridis, from `start` to `stop` (0 to 1)."""
    return matplotlib.colormaps["viridis"](np.linspace(start, stop, n))


def to_png(fig) -> bytes:
    buffer = io.BytesIO()
    # no bbox_inches="tight" (it renders twice); light compression (PNG encoding is a third of
    # the time, and level 1 makes files only a little larger)
    fig.savefig(buffer, format="png", dpi=90, pil_kwargs={"compress_level": 1})
    return buffer.getvalue()


def log_axis(ax, axis: str = "y") -> None:
    """A log scale whose tick labels are plain text ("1e-05"): matplotlib's default labels are
    mathtext, whose parsing is a third of the time it takes to draw a small figure. Minor ticks
    are labelled, as by default, only when the axis spans too few decades to show a major one."""
    getattr(ax, f"set_{axis}scale")("log")
    ticks = getattr(ax, f"{axis}axis")
    ticks.set_major_formatter(matplotlib.ticker.LogFormatter())
    ticks.set_minor_formatter(matplotlib.ticker.LogFormatter(labelOnlyBase=False))


def log10_or_nan(values) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.isfinite(array) & (array > 0), np.log10(array), np.nan)


def gradient_flow(layers: list[str], history: list[tuple[int, list[float]]]) -> bytes:
    """Layers (input at the bottom) by recorded steps, colour = log10 of the gradient norm: a
    vanishing network is dark at the bottom, an exploding one bright."""
    steps = [s for s, _ in history]
    grid = log10_or_nan([norms for _, norms in history]).T
    fig, ax = subplots(figsize=(8, 0.25 * len(layers) + 2))
    extent = (steps[0] - 0.5, steps[-1] + 0.5, -0.5, len(layers) - 0.5)
    image = ax.imshow(
        grid, aspect="auto", origin="lower", cmap="viridis", interpolation="nearest", extent=extent
    )
    every = math.ceil(len(layers) / MAX_LAYER_LABELS)  # each label is a costly tick: a deep net gets some
    ax.set_yticks(range(0, len(layers), every), layers[::every], fontsize=7)
    ax.set_xlabel("step")
    ax.set_title("gradient flow: log10 ||dL/dW|| per layer")
    fig.colorbar(image, ax=ax, label="log10 gradient norm")
    fig.subplots_adjust(left=0.16, right=0.97, bottom=0.08, top=0.93)  # room for the layer names
    return to_png(fig)


def norm_against_depth(
    layers: list[str], series: dict[str, dict[str, float]], title: str = "per-layer norms against depth"
) -> bytes:
    """Each named series (e.g. 'grad norm, step 0') as a line over the layers, on a log scale."""
    fig, ax = subplots(figsize=(8, 4))
    x = np.arange(1, len(layers) + 1)
    for label, values in series.items():
        y = [values.get(layer, math.nan) for layer in layers]
        ax.plot(x, y, marker="o", markersize=3, label=label)
    log_axis(ax)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("layer (input to output)")
    ax.set_ylabel("norm")
    ax.set_title(title)
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    return to_png(fig)


def through_time(curves: dict[str, list[tuple[int, list[float]]]]) -> bytes:
    """||dL/dh_t|| against t, one line per recorded training step (darker = later)."""
    fig, axes = subplots(1, len(curves), figsize=(8 * len(curves), 4), squeeze=False)
    for ax, (tag, history) in zip(axes[0], curves.items()):
        picks = (
            history if len(history) <= 8 else [history[round(i * (len(history) - 1) / 7)] for i in range(8)]
        )
        colours = viridis(0.9, 0.1, len(picks))
        for (step, values), colour in zip(picks, colours):
            ax.plot(np.arange(1, len(values) + 1), values, color=colour, label=f"step {step}")
        log_axis(ax)
        ax.set_xlabel("time step t")
        ax.set_ylabel("||dL/dh_t||")
        ax.set_title(f"gradient through time: {tag.split('/')[-1]}")
        ax.legend(fontsize=7)
        ax.grid(True, which="both", alpha=0.3)
    return to_png(fig)


def activations_and_derivatives(curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> bytes:
    """One panel per activation: phi(h) and phi'(h), with the peak of phi' marked (sigmoid's is
    1/4: each sigmoid layer passes at most a quarter of the gradient on)."""
    columns = 4
    rows = math.ceil(len(curves) / columns)
    fig, axes = subplots(
        rows, columns, figsize=(3.2 * columns, 2.6 * rows), squeeze=False, layout="constrained"
    )
    for ax, (name, (h, phi, dphi)) in zip(axes.flat, curves.items()):
        ax.plot(h, phi, label="phi(h)")
        ax.plot(h, dphi, label="phi'(h)")
        peak = int(np.argmax(dphi))
        ax.plot(h[peak], dphi[peak], "o", color="C1", markersize=4)
        ax.annotate(
            f"max phi' = {dphi[peak]:.3g}",
            (h[peak], dphi[peak]),
            textcoords="offset points",
            xytext=(4, 6),
            fontsize=7,
        )
        ax.axhline(0, color="grey", linewidth=0.5)
        ax.set_title(name, fontsize=9)
        ax.set_ylim(-1.5, 2.5)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(curves) :]:
        ax.set_axis_off()
    axes.flat[0].legend(fontsize=7, loc="upper left")
    fig.supxlabel("h (pre-activation)")
    return to_png(fig)
