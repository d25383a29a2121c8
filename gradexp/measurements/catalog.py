"""What a run shows, derived from the measurements' declarations: the TensorBoard charts, the
summary's keys and the terminal's columns. Nothing here is a list kept in step by hand."""

import re

from gradexp.measurements.base import MEASUREMENTS, Signal
from gradexp.network import Network

MAX_CURVES = 32  # per chart: a network with hundreds of layers gets charts of 32 layers each

# Written by the recorder at every logged step (the hot path), not by a diagnostic measurement.
STEP_SIGNALS = (
    # summary=False: grad_norm_first/_last are the engine's, from the recorder's logged norms
    Signal("grad_norm", "gradient norm per layer (weights)", summary=False),
    Signal("block_grad_norm", "gradient norm per block (its parameters)", per="block"),
)
FIXED_CHARTS = {
    "loss": [r"loss/.*"],
    "total gradient norm, before and after clipping": [r"grad_norm/total.*"],
    "clipping": [r"clip/.*"],
}


def all_signals() -> list[Signal]:
    return [*STEP_SIGNALS, *(s for m in MEASUREMENTS for s in m.signals)]


def summary_prefixes() -> list[str]:
    """The signals whose first and last values go into summary.json as <prefix>_first/_last."""
    return [s.prefix for s in all_signals() if s.summary]


def layer_columns() -> list[tuple[str, str]]:
    """(summary key, heading) of the terminal's optional per-layer columns, in measurement order."""
    return [
        (f"{s.prefix}_{when}", s.heading.replace("{step}", "{" + when + "}"))
        for m in MEASUREMENTS
        for s in m.signals
        for when in s.columns
    ]


def names(network: Network, per: str) -> list[str] | None:
    """The names a signal's tags carry; None where only the measurement knows them."""
    return {
        "layer": network.layer_names,
        "activation": [s.name for s in network.activations],
        "block": [b.name for b in network.blocks],
        "recurrent": [layer.name for layer in network.layers if layer.recurrent],
    }.get(per)


def charts(network: Network, measured: list[Signal]) -> dict[str, list[str]]:
    """TensorBoard's custom-scalars charts: one per signal overlaying its names, cut into charts
    of at most MAX_CURVES names (input to output) so that one chart never holds hundreds."""
    layout = {}
    for signal in [*STEP_SIGNALS, *measured]:
        if not signal.chart:
            continue
        found = names(network, signal.per)
        if found is None:
            layout[signal.chart] = [rf"{signal.prefix}/.*"]
            continue
        if not found:
            continue
        chunks = [found[i : i + MAX_CURVES] for i in range(0, len(found), MAX_CURVES)]
        for chunk in chunks:
            title = signal.chart if len(chunks) == 1 else f"{signal.chart}: {chunk[0]} to {chunk[-1]}"
            layout[title] = [rf"{signal.prefix}/({'|'.join(re.escape(n) for n in chunk)})$"]
    return {
        **{"loss": FIXED_CHARTS["loss"]},
        **layout,
        **{k: v for k, v in FIXED_CHARTS.items() if k != "loss"},
    }
