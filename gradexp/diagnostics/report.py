"""What the diagnostics add to a run's summary and figures: the mean-field prediction, read off
the initialized network, beside the measured signals and a verdict."""

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from torch import nn

from gradexp.config.schema import RunConfig
from gradexp.diagnostics.theory import measured_factor, no_prediction, signal_verdict, verdict
from gradexp.measurements.catalog import summary_prefixes
from gradexp.models import MODELS
from gradexp.network import Network
from gradexp.recorder import GradientRecorder


def predict(config: RunConfig, model: nn.Module) -> dict:
    """The mean-field prediction for the network as initialized, where its model's spec has one
    (the plain MLP); else the keys with a note that says why not."""
    spec = MODELS[config.model.name]
    if spec.predict is None:
        return no_prediction(spec.no_theory)
    return spec.predict(config, model)


def summarize(network: Network, recorder: GradientRecorder, prediction: dict) -> dict:
    """The diagnostics' keys of summary.json."""
    summary = {}
    order = _input_to_output(network)
    for prefix in summary_prefixes():
        for when, values in (("first", recorder.first_values), ("last", recorder.last_values)):
            summary[f"{prefix}_{when}"] = _by_layer(values, prefix, order)
    for when, pick in (("first", 0), ("last", -1)):
        summary[f"grad_through_time_{when}"] = {
            tag.split("/", 1)[1]: history[pick][1] for tag, history in recorder.vector_history.items()
        }
    summary["clip_fraction"] = recorder.clip_fraction()
    summary["verdict_per"] = "block" if len(network.trunk) >= 2 and summary["resid_grad_first"] else "layer"
    for when in ("first", "last"):
        factor, measured = _measured_verdict(network, summary, when)
        suffix = "" if when == "first" else "_last"
        summary[f"signal_factor_measured{suffix}"] = factor
        summary[f"verdict{suffix}"] = measured
        summary[f"verdict{suffix}_step"] = _measured_at(recorder, when)
    summary.update(prediction)
    return summary


def _measured_verdict(network: Network, summary: dict, when: str):
    """(the per-layer factor of the squared signal or None, the verdict) at the first or last
    diagnostic step: from the gradient through time of an RNN; along the residual stream of a
    network with blocks; else from the back-propagated signal of the layers before the output."""
    if summary[f"grad_through_time_ratio_{when}"]:
        return None, _through_time_verdict(summary[f"grad_through_time_ratio_{when}"])
    stream = summary[f"resid_grad_{when}"]
    trunk = [stream[n] for n in network.trunk if n in stream]
    if len(trunk) >= 2:  # along the residual stream of the longest trunk
        norms = trunk
    else:
        signal = summary[f"grad_signal_{when}"]
        hidden = [n for n in network.layer_names[:-1] if n in signal]
        norms = [signal[n] for n in hidden]
    if len(norms) < 2:
        return None, None
    factor = measured_factor(norms)
    return factor, signal_verdict(norms, factor, len(norms))


def _measured_at(recorder: GradientRecorder, when: str) -> int | None:
    """The step of the first or last diagnostic step whose signals gave the verdict."""
    steps = [
        s
        for tag, s in recorder.value_steps.items()
        if tag.startswith(("grad_signal/", "grad_through_time_ratio/", "resid_grad/"))
    ]
    if not steps:
        return None
    return min(first for first, _ in steps) if when == "first" else max(last for _, last in steps)


def _input_to_output(network: Network) -> dict[str, float]:
    """A rank for every name a tag can carry: layers, then each activation site just after the
    layer it is named after, and blocks."""
    order: dict[str, float] = {name: i for i, name in enumerate(network.layer_names)}
    for k, site in enumerate(network.activations):
        order.setdefault(site.name, order.get(site.name.rsplit(".", 1)[0], len(order)) + (k + 1) / 1e6)
    for i, block in enumerate(network.blocks):
        order.setdefault(block.name, i)
    return order


def _by_layer(values: dict[str, float], prefix: str, order: dict[str, float]) -> dict[str, float]:
    """The `prefix/<name>` entries of a tag -> value map, keyed by name, input to output."""
    found = {tag.split("/", 1)[1]: v for tag, v in values.items() if tag.startswith(prefix + "/")}
    return dict(sorted(found.items(), key=lambda kv: (order.get(kv[0], math.inf), kv[0])))


def _through_time_verdict(ratios: dict[str, float]) -> str | None:
    """An RNN's verdict from ||dL/dh_1|| / ||dL/dh_T|| of its most extreme recurrent layer: below
    0.1 vanishing, above 10 exploding (the 10x rule of the MLP verdict, in the gradient's norm)."""
    verdicts = set()
    for ratio in ratios.values():
        if ratio is None or math.isnan(ratio):
            continue
        verdicts.add(
            "vanishing" if ratio == 0 else "exploding" if math.isinf(ratio) else verdict(ratio**2, 1)
        )
    return next((v for v in ("vanishing", "exploding", "stable") if v in verdicts), None)


# the signals norm_vs_depth draws beside the norms, at their first step, with their legends
_DRAWN_SIGNALS = {"grad_signal": "back-propagated signal ||dL/dz||", "act_std": "activation std (forward)"}


@dataclass
class FigureData:
    """What a run's end-of-run figures are drawn from. The recorder keeps it; a sweep job that
    leaves its figures for later saves it to its directory, for `gradexp-report` to draw the
    same figures from. Saved as JSON with NaN and infinity kept (Python reads them back), and
    floats written exactly, so the figures drawn later are the ones the run would have drawn."""

    layers: list[str]
    norm_history: list[tuple[int, list[float]]]  # (step, layer norms) per logged step
    first_values: dict[str, float]  # each drawn signal's first value, by tag
    vector_history: dict[str, list[tuple[int, list[float]]]]  # an RNN's gradient through time

    @classmethod
    def of(cls, recorder: GradientRecorder) -> "FigureData":
        first = {t: v for t, v in recorder.first_values.items() if t.split("/", 1)[0] in _DRAWN_SIGNALS}
        return cls(recorder.layer_names, recorder.norm_history, first, recorder.vector_history)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: Path) -> "FigureData":
        return cls(**json.loads(path.read_text()))

    @property
    def last_step(self) -> int:
        return self.norm_history[-1][0] if self.norm_history else 0


def draw(data: FigureData) -> dict[str, bytes]:
    """The end-of-run figures, by file name."""
    # matplotlib: imported where a figure is drawn (see diagnostics/figures.py)
    from gradexp.diagnostics import figures

    drawn = {}
    layers, history = data.layers, data.norm_history
    if history:
        drawn["gradient_flow"] = figures.gradient_flow(layers, history)
        (first_step, first), (last_step, last) = history[0], history[-1]
        series = {f"grad norm, step {first_step}": dict(zip(layers, first))}
        if last_step != first_step:
            series[f"grad norm, step {last_step}"] = dict(zip(layers, last))
        order = {name: i for i, name in enumerate(layers)}
        for prefix, legend in _DRAWN_SIGNALS.items():
            by_layer = _by_layer(data.first_values, prefix, order)
            if by_layer:
                series[f"{legend}, step {first_step}"] = by_layer
        drawn["norm_vs_depth"] = figures.norm_against_depth(layers, series)
    if data.vector_history:
        drawn["grad_through_time"] = figures.through_time(data.vector_history)
    return drawn
