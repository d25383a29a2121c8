"""The diagnostics, through the real engine: they must show the textbook phenomena, agree with
the theory where it applies, match quantities derived by hand, and never change training."""

import gc
import math
import weakref

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from torch import nn

from gradexp.activations import ACTIVATIONS
from gradexp.config.schema import ActivationConfig, DiagnosticsConfig
from gradexp.config.validate import validate
from gradexp.diagnostics.histograms import BINS, SAMPLES, Histograms
from gradexp.diagnostics.theory import derivative, max_derivative, predict_chi1, where_below
from gradexp.diagnostics.through_time import ThroughTime
from gradexp.engine import train
from gradexp.measurements import Context
from gradexp.measurements.activation_stats import ActivationStats, _share_within
from gradexp.measurements.capture import Capture
from gradexp.measurements.grad_signal import GradSignal
from gradexp.measurements.reduce import Stacker
from gradexp.models import build_model
from gradexp.network import discover
from gradexp.tasks import build_task
from tests.conftest import make_config, read_scalars

PROBE = ["trainer.steps=1", "model.width=128", "task.n_train=512", "trainer.batch_size=128"]


def probe(tmp_path, *overrides) -> dict:
    """Train for one step (an at-initialization probe) and return the summary."""
    return train(make_config(*PROBE, *overrides), tmp_path, show_progress=False)


def hidden(summary: dict, key: str) -> list[float]:
    return [summary[key][n] for n in summary["layers"][:-1]]


def test_sigmoid_backpropagated_signal_shrinks_with_depth(tmp_path):
    s = probe(tmp_path, "model.depth=15", "activation=sigmoid", "init=xavier_uniform")
    signal = hidden(s, "grad_signal_first")
    assert all(a < b for a, b in zip(signal, signal[1:]))  # smaller at every step towards the input
    assert signal[0] < 1e-6 * signal[-1]
    assert s["verdict"] == "vanishing" and s["verdict_predicted"] == "vanishing"


def test_he_init_keeps_relu_signal_flat_where_a_smaller_variance_shrinks_it(tmp_path):
    he = probe(tmp_path / "he", "model.depth=20", "model.width=256", "activation=relu", "init=kaiming_normal")
    small = probe(
        tmp_path / "small",
        "model.depth=20",
        "model.width=256",
        "activation=relu",
        "init=normal",
        f"init.std={math.sqrt(0.5 / 256)}",
    )  # sigma_w^2 = 0.5: a quarter of He's
    assert 0.8 < he["signal_factor_measured"] < 1.25 and he["verdict"] == "stable"
    assert he["chi1_predicted"] == pytest.approx(1.0, abs=0.03)
    assert (
        small["signal_factor_measured"] == pytest.approx(0.25, rel=0.25) and small["verdict"] == "vanishing"
    )
    assert small["chi1_predicted"] == pytest.approx(0.25, rel=0.03)
    # a squared factor of 1/4 is 1/2 per layer in norm: 0.5^19 = 2e-6 across the 20 hidden layers
    assert hidden(small, "grad_signal_first")[0] < 1e-5 * hidden(small, "grad_signal_first")[-1]


def test_weight_gradients_can_stay_flat_while_the_signal_shrinks(tmp_path):
    """Glorot & Bengio's observation: dL/dW = dL/dz h^T, and a shrinking h can cancel a shrinking
    dL/dz, so only the back-propagated signal shows the vanishing."""
    s = probe(tmp_path, "model.depth=8", "activation=tanh", "init=normal", "init.std=0.05")
    weights, signal = hidden(s, "grad_norm_first"), hidden(s, "grad_signal_first")
    assert max(weights) / min(weights) < 2
    assert signal[-1] / signal[0] > 50


def test_measured_factor_agrees_with_mean_field_prediction_for_tanh(tmp_path):
    s = probe(
        tmp_path, "model.depth=10", "model.width=256", "activation=tanh", "init=normal", "init.std=0.035"
    )
    assert s["signal_factor_measured"] == pytest.approx(s["chi1_predicted"], rel=0.15)


def _trapezoid_expectation(f, mean: float, variance: float) -> float:
    """E[f(h)], h ~ N(mean, variance), by the trapezoid rule on a fine grid: an independent check."""
    z = np.linspace(-12, 12, 200001)
    density = np.exp(-(z**2) / 2) / math.sqrt(2 * math.pi)
    return float(np.trapezoid(f(mean + math.sqrt(variance) * z) * density, z))


@pytest.mark.parametrize("sigma_w2", [0.5, 1.0, 2.0, 3.0])
def test_chi1_for_relu_is_half_the_weight_variance(sigma_w2):
    """E[relu'(h)^2] = P(h > 0) = 1/2 for zero-mean h, whatever q."""
    assert predict_chi1(nn.ReLU(), sigma_w2).chi1 == pytest.approx(sigma_w2 / 2, rel=1e-9)


@pytest.mark.parametrize("sigma_w2", [0.3, 0.8])
def test_chi1_for_tanh_below_the_edge_of_chaos_is_the_weight_variance(sigma_w2):
    """Without bias and sigma_w^2 < 1, q* = 0 and tanh'(0) = 1, so chi_1 = sigma_w^2."""
    prediction = predict_chi1(nn.Tanh(), sigma_w2)
    assert prediction.q_star < 1e-6 and prediction.chi1 == pytest.approx(sigma_w2, rel=1e-4)


@pytest.mark.parametrize("sigma_w2, bias", [(2.0, 0.0), (1.5, 0.3)])
def test_chi1_for_tanh_above_the_edge_matches_an_independent_integration(sigma_w2, bias):
    q = 1.0
    for _ in range(500):
        q = sigma_w2 * _trapezoid_expectation(lambda h: np.tanh(h) ** 2, bias, q)
    expected = sigma_w2 * _trapezoid_expectation(lambda h: (1 - np.tanh(h) ** 2) ** 2, bias, q)
    prediction = predict_chi1(nn.Tanh(), sigma_w2, bias_mean=bias)
    assert prediction.q_star == pytest.approx(q, rel=1e-4)
    assert prediction.chi1 == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize(
    "overrides, reason",
    [
        (["norm=batchnorm"], "norm=batchnorm"),
        (["model.residual=true"], "residual"),
        (["model.dropout=0.2"], "dropout"),
        (["init=constant"], "zero-mean"),
        (["model=rnn"], "gradient through time"),
    ],
)
def test_theory_says_when_it_does_not_apply(tmp_path, overrides, reason):
    s = train(make_config(*overrides, "trainer.steps=1"), tmp_path, show_progress=False)
    assert s["chi1_predicted"] is None and reason in s["theory_note"]


def test_saturation_is_reported_for_sigmoid_with_large_weights(tmp_path):
    s = probe(tmp_path, "model.depth=4", "activation=sigmoid", "init=normal", "init.std=1.0")
    assert s["saturation_first"]["002_hidden"] > 0.5 and s["dead_first"] == {}


def test_dead_units_are_reported_for_relu_with_a_negative_bias(tmp_path):
    s = probe(tmp_path, "model.depth=4", "activation=relu", "init.bias=-3.0")
    assert s["dead_first"]["002_hidden"] > 0.9 and s["saturation_first"] == {}
    healthy = probe(tmp_path / "b", "model.depth=4", "activation=relu")
    assert healthy["dead_first"]["001_hidden"] < 0.05


@pytest.mark.parametrize("slope", [None, 0.01, -0.5])
def test_dead_share_and_activation_statistics_match_their_definitions(slope):
    """dead = share of units whose input is <= 0 for the whole batch, act_mean and act_std those
    of the activation's output; for a leaky ReLU with a negative slope too, whose negative
    inputs give positive outputs."""
    activation = (
        ["activation=relu"]
        if slope is None
        else ["activation=leaky_relu", f"activation.negative_slope={slope}"]
    )
    config = validate(make_config(*PROBE, "model.depth=3", "init.bias=-1.0", *activation))
    torch.manual_seed(0)
    task = build_task(config.task, 0)
    model = build_model(config, task)
    hidden = list(zip(["001_hidden", "002_hidden", "003_hidden"], model.hidden))
    x = task.x_train[:128]
    measured = measure_signals(model, x, lambda output: output.sum())
    h = x
    for name, layer in hidden:
        pre = layer.norm(layer.linear(h))
        h = layer.activation(pre)
        assert measured[f"dead/{name}"] == pytest.approx((pre <= 0).all(dim=0).float().mean().item())
        assert measured[f"act_mean/{name}"] == pytest.approx(h.mean().item(), rel=1e-5)
        assert measured[f"act_std/{name}"] == pytest.approx(h.std().item(), rel=1e-5)
    assert 0 < measured["dead/003_hidden"] < 1  # neither degenerate case


def test_weight_norms_and_sgd_update_ratio_match_their_definitions(tmp_path):
    """Plain SGD moves W by lr * dL/dW, so ||dW|| / ||W|| = lr * ||dL/dW|| / ||W||."""
    cfg = make_config(*PROBE, "optimizer=sgd", "optimizer.lr=0.05")
    s = train(cfg, tmp_path, show_progress=False)
    config = validate(cfg)
    torch.manual_seed(config.trainer.seed)
    model = build_model(config, build_task(config.task, config.trainer.seed))
    for name, w in model.layers():
        assert s["weight_norm_first"][name] == pytest.approx(w.norm().item(), rel=1e-5)
        expected = 0.05 * s["grad_norm_first"][name] / s["weight_norm_first"][name]
        assert s["update_ratio_first"][name] == pytest.approx(expected, rel=1e-3)


@pytest.mark.parametrize("gain, verdict", [(0.8, "vanishing"), (1.2, "exploding")])
def test_rnn_gradient_through_time_vanishes_below_gain_one_and_explodes_above(tmp_path, gain, verdict):
    """An IRNN (ReLU cells, W_hh = gain * I) on non-negative inputs is linear in h, so dL/dh_t
    scales as gain^(T - t)."""
    s = train(
        make_config(
            "model=rnn",
            "model.cell=rnn_relu",
            "task.seq_len=40",
            "model.recurrent_init=identity",
            f"model.recurrent_gain={gain}",
            "trainer.steps=1",
        ),
        tmp_path,
        show_progress=False,
    )
    ratio = s["grad_through_time_ratio_first"]["rnn1"]
    assert (ratio < 1e-2) if verdict == "vanishing" else (ratio > 1e2)
    assert s["verdict"] == verdict
    curve = s["grad_through_time_first"]["rnn1"]
    assert len(curve) == 40 and curve[0] / curve[-1] == pytest.approx(ratio, rel=1e-4)
    assert s["spectral_norm_first"]["002_rnn1_hh"] == pytest.approx(gain, rel=1e-4)


@pytest.mark.parametrize("cell", ["rnn_tanh", "lstm", "gru"])
def test_replayed_rnn_gives_the_fused_networks_last_state_gradient_and_leaves_grad_alone(cell):
    config = validate(make_config("model=rnn", f"model.cell={cell}", "model.num_layers=2"))
    task = build_task(config.task, 0)
    model = build_model(config, task)
    x, y = task.x_train[:16], task.y_train[:16]
    states, _ = model.rnn(x)
    states.retain_grad()
    nn.functional.mse_loss(model.output(states[:, -1]), y).backward()
    expected = states.grad[:, -1].norm().item()
    before = [p.grad.clone() for p in model.parameters()]
    norms, _ = ThroughTime(model).measure(x, y, nn.functional.mse_loss)
    assert norms["rnn2"][-1].item() == pytest.approx(expected, rel=1e-4)
    assert all(torch.equal(b, p.grad) for b, p in zip(before, model.parameters()))


@pytest.mark.parametrize("model", ["mlp", "rnn"])
def test_watching_does_not_change_training(tmp_path, model):
    base = [f"model={model}", "trainer.steps=15", "trainer.grad_accum=2"]
    watched = train(make_config(*base, "diagnostics=full"), tmp_path / "a", show_progress=False)
    unwatched = train(make_config(*base, "diagnostics=off"), tmp_path / "b", show_progress=False)
    for key in ("grad_norm_first", "grad_norm_last", "final_train_loss", "final_val_loss"):
        assert watched[key] == unwatched[key]
    assert unwatched["weight_norm_first"] == {} and watched["weight_norm_first"]


def test_signals_histograms_and_layout_reach_tensorboard(tmp_path):
    train(
        make_config("diagnostics.every=5", "diagnostics.histograms_every=10", "model.depth=3"),
        tmp_path,
        show_progress=False,
    )
    scalars = read_scalars(tmp_path)
    for prefix in ("grad_signal", "act_mean", "act_std", "dead", "weight_norm", "update_ratio"):
        assert sorted(scalars[f"{prefix}/001_hidden"]) == [0, 5, 10, 15, 19]
    acc = EventAccumulator(str(tmp_path), size_guidance={"histograms": 0})
    acc.Reload()
    tags = acc.Tags()["histograms"]
    assert {"weights/001_hidden", "gradients/004_output", "activations/003_hidden"} <= set(tags)
    [h0, h10, h19] = acc.Histograms("weights/002_hidden")
    assert [h0.step, h10.step, h19.step] == [0, 10, 19]
    assert sum(h0.histogram_value.bucket) == h0.histogram_value.num == 16 * 16
    events = [e for f in tmp_path.glob("events.out.tfevents.*") for e in EventFileLoader(str(f)).Load()]
    layout = [v for e in events for v in e.summary.value if v.tag == "custom_scalars__config__"]
    assert layout and b"grad_signal/" in layout[0].tensor.string_val[0]


def test_clipping_statistics_count_every_step(tmp_path):
    s = train(make_config("trainer.clip.max_norm=0.5", "trainer.steps=40"), tmp_path, show_progress=False)
    scalars = read_scalars(tmp_path)
    clipped = [scalars["grad_norm/total"][t] > 0.5 for t in range(40)]
    assert s["clip_fraction"] == pytest.approx(sum(clipped) / 40)
    assert scalars["clip/fraction"][39] == pytest.approx(sum(clipped) / 40)
    assert all(scalars["clip/clipped"][t] == float(c) for t, c in enumerate(clipped))


def test_figures_are_drawn_into_the_run_and_tensorboard(tmp_path):
    train(make_config("diagnostics.figures=true"), tmp_path / "mlp", show_progress=False)
    train(make_config("model=rnn", "diagnostics.figures=true"), tmp_path / "rnn", show_progress=False)
    for run, names in [
        ("mlp", ["gradient_flow", "norm_vs_depth"]),
        ("rnn", ["gradient_flow", "norm_vs_depth", "grad_through_time"]),
    ]:
        for name in names:
            assert (tmp_path / run / "figures" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        acc = EventAccumulator(str(tmp_path / run), size_guidance={"images": 0})
        acc.Reload()
        assert sorted(acc.Tags()["images"]) == sorted(f"figures/{n}" for n in names)


def test_summary_carries_every_signal_first_and_last(tmp_path):
    s = train(make_config(), tmp_path, show_progress=False)
    for prefix in ("grad_signal", "act_mean", "act_std", "weight_norm", "update_ratio", "dead"):
        assert set(s[f"{prefix}_first"]) == set(s[f"{prefix}_last"]) and s[f"{prefix}_first"]
    assert set(s["act_std_first"]) == set(s["layers"][:-1])
    assert set(s["grad_signal_first"]) == set(s["layers"])
    assert {"chi1_predicted", "signal_factor_measured", "verdict", "theory_note", "clip_fraction"} <= set(s)


def test_histograms_keep_their_own_interval_when_signals_are_sparser(tmp_path):
    train(
        make_config("diagnostics.every=15", "diagnostics.histograms_every=4", "model.depth=2"),
        tmp_path,
        show_progress=False,
    )
    acc = EventAccumulator(str(tmp_path), size_guidance={"histograms": 0})
    acc.Reload()
    assert [h.step for h in acc.Histograms("weights/001_hidden")] == [0, 4, 8, 12, 16, 19]


def test_a_diverging_rnn_with_every_diagnostic_on_is_diverged_not_failed(tmp_path):
    s = train(
        make_config(
            "model=rnn",
            "model.cell=rnn_relu",
            "model.recurrent_init=identity",
            "model.recurrent_gain=3.0",
            "optimizer=sgd",
            "optimizer.lr=1000.0",
            "diagnostics=full",
            "trainer.steps=30",
        ),
        tmp_path,
        show_progress=False,
    )
    assert s["status"] == "diverged" and s["error"] is None


def test_backpropagated_signal_does_not_depend_on_gradient_accumulation(tmp_path):
    """The hooks watch the first micro-batch, whose backward carries loss / grad_accum."""
    one = train(make_config("trainer.steps=1", "trainer.grad_accum=1"), tmp_path / "a", show_progress=False)
    two = train(make_config("trainer.steps=1", "trainer.grad_accum=2"), tmp_path / "b", show_progress=False)
    for layer, value in one["grad_signal_first"].items():
        assert two["grad_signal_first"][layer] == pytest.approx(value, rel=1e-5)


def test_signals_stay_off_when_only_histograms_are_asked_for(tmp_path):
    s = train(
        make_config("diagnostics.every=null", "diagnostics.histograms_every=5"), tmp_path, show_progress=False
    )
    assert s["weight_norm_first"] == {} and s["grad_signal_first"] == {} and s["verdict"] is None
    acc = EventAccumulator(str(tmp_path), size_guidance={"histograms": 0})
    acc.Reload()
    assert [h.step for h in acc.Histograms("activations/001_hidden")] == [0, 5, 10, 15, 19]


def test_elu_reports_saturation_on_its_negative_side_not_dead_units(tmp_path):
    s = probe(tmp_path, "model.depth=4", "activation=elu", "init.bias=-4.0")
    assert s["saturation_first"]["002_hidden"] > 0.5 and s["dead_first"] == {}


def test_a_signal_that_vanishes_below_1e_38_is_read_not_zeroed_and_called_vanishing(tmp_path):
    """60 sigmoid layers take dL/dz into float32's subnormals; a plain float32 norm would square
    those entries to exactly 0."""
    s = probe(tmp_path, "model.depth=60", "model.width=32", "activation=sigmoid", "init=xavier_uniform")
    signal = hidden(s, "grad_signal_first")
    assert 0.0 < signal[0] < 1e-35 and signal[0] < signal[5] < signal[10]
    assert s["verdict"] == "vanishing" and s["signal_factor_measured"] < 0.1


def test_replayed_hidden_states_equal_the_fused_networks_at_every_step():
    config = validate(make_config("model=rnn", "model.cell=gru", "model.num_layers=2"))
    task = build_task(config.task, 0)
    model = build_model(config, task)
    x, y = task.x_train[:16], task.y_train[:16]
    norms, hidden_states = ThroughTime(model).measure(x, y, nn.functional.mse_loss)
    fused, _ = model.rnn(x)
    torch.testing.assert_close(hidden_states["rnn2"].transpose(0, 1), fused, rtol=1e-5, atol=1e-6)
    assert norms["rnn1"].shape == norms["rnn2"].shape == (x.shape[1],)


def test_spectral_norm_of_a_gated_cell_is_the_largest_over_its_gate_blocks(tmp_path):
    cfg = make_config("model=rnn", "model.cell=lstm", "model.hidden_size=32", "trainer.steps=1")
    s = train(cfg, tmp_path, show_progress=False)
    config = validate(cfg)
    torch.manual_seed(config.trainer.seed)
    model = build_model(config, build_task(config.task, config.trainer.seed))
    w_hh = model.recurrent_weights()[0].detach()
    exact = max(torch.linalg.matrix_norm(block, ord=2).item() for block in w_hh.split(32))
    assert s["spectral_norm_first"]["002_rnn1_hh"] == pytest.approx(exact, rel=1e-2)


def test_histogram_rows_match_the_exact_statistics_of_each_sample():
    """A tensor with fewer values than a sample is histogrammed whole (its padding counts for
    nothing); a larger one through its fixed sample. Each row must equal the exact statistics
    and torch.histc's bins of what was sampled."""
    torch.manual_seed(0)
    small, large, other = torch.randn(10, 30) * 3 + 1, torch.rand(200, 100), torch.randn(5000)
    histograms = Histograms()
    rows = histograms.stats([small, large, other, small])
    for tensor, row in zip([small, large, other, small], rows.tolist()):
        flat = tensor.flatten()
        sample = flat if flat.numel() <= SAMPLES else flat[histograms._index(flat.numel(), flat.device)]
        low, high, count, total, squares, *counts = row
        assert (low, high, count) == (sample.min().item(), sample.max().item(), sample.numel())
        assert total == pytest.approx(sample.sum().item(), rel=1e-4, abs=1e-3)
        assert squares == pytest.approx(sample.square().sum().item(), rel=1e-4)
        assert counts == torch.histc(sample, BINS, low, high).tolist()


@pytest.mark.parametrize("norm", ["none", "layernorm"])
def test_backpropagated_signal_is_the_norm_of_the_gradient_at_each_linear_output(norm):
    """grad_signal/<layer> = ||dL/dz|| for z = W h + b, whether the activation reads z itself
    (one hook per layer) or a normalized z (a hook on the linear map too)."""
    config = validate(make_config(*PROBE, "model.depth=3", f"norm={norm}"))
    torch.manual_seed(0)
    task = build_task(config.task, 0)
    model = build_model(config, task)
    names = ["001_hidden", "002_hidden", "003_hidden"]
    x = task.x_train[:128]
    measured = measure_signals(model, x, lambda output: output.square().mean())
    zs, h = [], x
    for layer in model.hidden:
        zs.append(layer.linear(h))
        h = layer.activation(layer.norm(zs[-1]))
    zs.append(model.output(h))
    grads = torch.autograd.grad(zs[-1].square().mean(), zs)
    for name, grad in zip([*names, "004_output"], grads):
        assert measured[f"grad_signal/{name}"] == pytest.approx(grad.norm().item(), rel=1e-5)


@pytest.mark.parametrize("norm", ["none", "layernorm"])
def test_the_hooks_keep_no_gradient_once_the_backward_pass_is_over(norm):
    """Each dL/dy is reduced to its norm in its hook and then freed as autograd frees it: kept to
    the end of the backward pass, every layer's would add to the step's peak memory. Hooked at
    the activations' inputs (no norm) and at the linear maps' outputs (a LayerNorm between)."""
    seen = []

    class Watched(Capture):
        def _layer_grad(self, i, grad):
            seen.append(weakref.ref(grad))
            super()._layer_grad(i, grad)

    config = validate(make_config(*PROBE, "model.depth=3", f"norm={norm}"))
    model = build_model(config, build_task(config.task, 0))
    x = torch.randn(128, model.hidden[0].linear.in_features)
    network = discover(model, x[:2])
    capture = Watched(network, {"layers", "activations"})
    with capture.hooks():
        model(x).square().mean().backward()
    gc.collect()
    assert len(seen) == len(network.layers) and all(grad() is None for grad in seen)
    assert all(n.dim() == 0 for norms in capture.layer_grad_norms for n in norms)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_an_activations_input_is_kept_only_where_a_measurement_reads_it(activation):
    """A ReLU's dead units are read off its output, so its input (which the bare step frees in
    the forward pass) is not kept; a tanh's saturation is read off its input, which is."""
    config = validate(make_config(*PROBE, "model.depth=3", f"activation={activation}"))
    model = build_model(config, build_task(config.task, 0))
    x = torch.randn(128, model.hidden[0].linear.in_features)
    network = discover(model, x[:2])
    stats = ActivationStats(Context(network, DiagnosticsConfig()))
    capture = Capture(network, {"activations"}, stats.inputs_read())
    with capture.hooks():
        model(x).sum().backward()
    assert all(t is not None for t in capture.act_outputs) and len(capture.act_outputs) == 3
    assert [t is not None for t in capture.act_inputs] == [activation == "tanh"] * 3
    (tags, values), *_ = stats.measure(capture, None, None).scalars
    units = "saturation" if activation == "tanh" else "dead"
    assert sum(tag.startswith(units) for tag in tags) == 3 and torch.isfinite(values).all()


def test_the_verdict_says_when_it_was_measured_and_what_it_became(tmp_path):
    """The 2-layer job of vanishing_sigmoid: at initialization its squared signal shrinks more
    than 100x across the network (vanishing), yet it learns (97% accuracy), and by its last
    diagnostic step the signal no longer vanishes. Both verdicts, with their steps."""
    cfg = make_config("experiment=vanishing_sigmoid", "model.depth=2", "diagnostics.every=100", tiny=False)
    s = train(cfg, tmp_path / "run", show_progress=False)
    assert (s["verdict"], s["verdict_step"]) == ("vanishing", 0)
    assert (s["verdict_last"], s["verdict_last_step"]) == ("stable", 299)
    assert s["signal_factor_measured_last"] > 10 * s["signal_factor_measured"]
    assert s["final_val_acc"] > 0.9


def measure_signals(model, x, loss) -> dict[str, float]:
    """The back-propagated signal and activation statistics of one forward and backward pass,
    through the measurements' own hooks."""
    network = discover(model, x[:2])
    context = Context(network, DiagnosticsConfig())
    measurements = [GradSignal(context), ActivationStats(context)]
    capture = Capture(network, {"layers", "activations"}, measurements[1].inputs_read())
    with capture.hooks():
        loss(model(x)).backward()
    measured = {}
    for m in measurements:
        for tags, values in m.measure(capture, None, None).scalars:
            measured.update(zip(tags, values.tolist()))
    return measured


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "softsign", "elu", "selu", "gelu"])
def test_saturated_units_are_counted_where_autograd_says_phi_prime_is_small(name):
    """The saturated share comes from the input regions where phi' < fraction * max phi', found
    once; on a million inputs spread over the interesting range it equals the share autograd's
    phi' gives, value for value."""
    module = ACTIVATIONS[name](ActivationConfig(name=name))
    threshold = 0.1 * max_derivative(module)
    x = torch.randn(4, 250_000, generator=torch.Generator().manual_seed(0)) * 4
    expected = (derivative(module, x) < threshold).float().mean(dim=1)
    got = _share_within(x, where_below(module, threshold), Stacker())
    assert torch.equal(got, expected.to(got.dtype)) or (got - expected).abs().max() <= 4e-6
    assert 0.05 < got.mean() < 0.95  # both sides of the edge are exercised
