"""What the diagnostics add to a run's summary and figures: the mean-field prediction, read off
the initialized network, beside the measured signals and a verdict."""

import math

import torch
from torch import nn

from gradexp.activations import ACTIVATIONS
from gradexp.config.schema import RunConfig
from gradexp.diagnostics import figures
from gradexp.diagnostics.theory import measured_factor, predict_chi1, signal_verdict, verdict
from gradexp.measurements.catalog import summary_prefixes
from gradexp.models import MLP
from gradexp.recorder import GradientRecorder
from gradexp.sinks.layout import fmt


def predict(config: RunConfig, model: nn.Module) -> dict:
    """chi_1 for the network as initialized, or a sentence saying why the theory does not apply.
    sigma_w^2 = fan_in * E[W^2] and the bias statistics are read off the hidden layers, so
    every initializer works without declaring its variance."""
    reason = _not_applicable(config, model)
    if reason is None:
        layers = list(model.hidden)
        square = [m.linear for m in layers if m.linear.in_features == m.linear.out_features] or [
            layers[0].linear
        ]
        weights = torch.cat([m.weight.detach().flatten() for m in square])
        if weights.std() == 0 or abs(weights.mean()) > 0.1 * weights.std():
            reason = "the weights are not zero-mean and random (the theory assumes i.i.d. zero-mean weights)"
    if reason is not None:
        return {
            "chi1_predicted": None,
            "depth_scale_predicted": None,
            "verdict_predicted": None,
            "theory_note": f"mean-field theory does not apply: {reason}",
        }
    sigma_w2 = sum(m.in_features * m.weight.detach().pow(2).mean().item() for m in square) / len(square)
    biases = torch.cat([m.linear.bias.detach() for m in layers])
    prediction = predict_chi1(
        ACTIVATIONS[config.activation.name](config.activation),
        sigma_w2,
        biases.mean().item(),
        biases.var().item() if biases.numel() > 1 else 0.0,
    )
    if prediction.forward_explodes:  # a growth of 1.001x per layer is no explosion at depth 6: say it
        growth = f"{prediction.forward_growth:.4g}"  # four digits: near 1 is where it matters
        note = (
            f"sigma_w^2 = {fmt(sigma_w2)}, no fixed point q*: the forward variance grows {growth}x per layer"
        )
    else:
        note = f"sigma_w^2 = {fmt(sigma_w2)}, q* = {fmt(prediction.q_star)}"
    return {
        "chi1_predicted": prediction.chi1,
        "depth_scale_predicted": prediction.depth_scale,
        "verdict_predicted": verdict(prediction.chi1, config.model.depth),
        "theory_note": note,
    }


def _not_applicable(config: RunConfig, model: nn.Module) -> str | None:
    if config.model.name == "rnn":
        return "it describes MLPs; for an RNN read the gradient through time"
    if not isinstance(model, MLP):
        return "it describes gradexp's plain MLP; for this network read the measured signals"
    if config.norm.name != "none":
        return f"norm={config.norm.name} rescales every pre-activation"
    if config.model.residual:
        return "residual connections add a path that skips each layer"
    if config.model.dropout > 0:
        return "dropout changes the variance map"
    return None


def summarize(config: RunConfig, recorder: GradientRecorder, prediction: dict) -> dict:
    """The diagnostics' keys of summary.json."""
    summary = {}
    order = [*recorder.layer_names, *recorder.block_names]
    for prefix in summary_prefixes():
        if prefix == "block_grad_norm":
            continue  # the engine's, from the logged steps
        for when, values in (("first", recorder.first_values), ("last", recorder.last_values)):
            summary[f"{prefix}_{when}"] = _by_layer(values, prefix, order)
    for when, pick in (("first", 0), ("last", -1)):
        summary[f"grad_through_time_{when}"] = {
            tag.split("/", 1)[1]: history[pick][1] for tag, history in recorder.vector_history.items()
        }
    summary["clip_fraction"] = (
        recorder.clipped_steps / recorder.steps_seen if recorder.clipping and recorder.steps_seen else None
    )
    for when in ("first", "last"):
        factor, measured = _measured_verdict(config, recorder, summary, when)
        suffix = "" if when == "first" else "_last"
        summary[f"signal_factor_measured{suffix}"] = factor
        summary[f"verdict{suffix}"] = measured
        summary[f"verdict{suffix}_step"] = _measured_at(recorder, when)
    summary.update(prediction)
    return summary


def _measured_verdict(config: RunConfig, recorder: GradientRecorder, summary: dict, when: str):
    """(the per-layer factor of the squared signal or None, the verdict) at the first or last
    diagnostic step: from the gradient through time of an RNN; along the residual stream of a
    network with blocks; else from the back-propagated signal of the layers before the output."""
    if summary[f"grad_through_time_ratio_{when}"]:
        return None, _through_time_verdict(summary[f"grad_through_time_ratio_{when}"])
    if recorder.block_names:
        stream = summary[f"resid_grad_{when}"]
        norms = [stream[n] for n in recorder.block_names if n in stream]
    else:
        signal = summary[f"grad_signal_{when}"]
        hidden = [n for n in recorder.layer_names[:-1] if n in signal]
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


def _by_layer(values: dict[str, float], prefix: str, layers: list[str]) -> dict[str, float]:
    """The `prefix/<name>` entries of a tag -> value map, keyed by name, input to output."""
    order = {name: i for i, name in enumerate(layers)}
    found = {tag.split("/", 1)[1]: v for tag, v in values.items() if tag.startswith(prefix + "/")}
    return dict(sorted(found.items(), key=lambda kv: (order.get(kv[0], 0), kv[0])))


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


def draw(recorder: GradientRecorder) -> dict[str, bytes]:
    """The end-of-run figures, by file name, from what the recorder kept."""
    drawn = {}
    layers = recorder.layer_names
    if recorder.norm_history:
        drawn["gradient_flow"] = figures.gradient_flow(layers, recorder.norm_history)
        (first_step, first), (last_step, last) = recorder.logged_norms(0), recorder.logged_norms(-1)
        series = {f"grad norm, step {first_step}": first}
        if last_step != first_step:
            series[f"grad norm, step {last_step}"] = last
        signal = _by_layer(recorder.first_values, "grad_signal", layers)
        if signal:
            series[f"back-propagated signal ||dL/dz||, step {first_step}"] = signal
        act_std = _by_layer(recorder.first_values, "act_std", layers)
        if act_std:
            series[f"activation std (forward), step {first_step}"] = act_std
        drawn["norm_vs_depth"] = figures.norm_against_depth(layers, series)
    if recorder.vector_history:
        drawn["grad_through_time"] = figures.through_time(recorder.vector_history)
    return drawn
