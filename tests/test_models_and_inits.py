"""Each registry choice builds what it names: the model's depth, activation and norm, and each
initializer's weight variance as its formula states."""

import math

import pytest
import torch
from torch import nn

from gradexp.activations import ACTIVATIONS
from gradexp.config.validate import validate
from gradexp.initializers import INITIALIZERS
from gradexp.models import MLP, RNN, build_model
from gradexp.norms import NORMS
from gradexp.tasks import build_task
from tests.conftest import make_config

ACTIVATION_TYPES = {
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "selu": nn.SELU,
    "softsign": nn.Softsign,
    "identity": nn.Identity,
}
NORM_TYPES = {"none": nn.Identity, "batchnorm": nn.BatchNorm1d, "layernorm": nn.LayerNorm}


def build(*overrides):
    config = validate(make_config(*overrides))
    torch.manual_seed(0)
    return build_model(config, build_task(config.task, 0))


def test_registries_cover_every_yaml_choice():
    from gradexp.config import CONFIG_DIR

    for group, registry in [("activation", ACTIVATIONS), ("init", INITIALIZERS), ("norm", NORMS)]:
        assert {p.stem for p in (CONFIG_DIR / group).glob("*.yaml")} == set(registry)


@pytest.mark.parametrize("activation", sorted(ACTIVATION_TYPES))
@pytest.mark.parametrize("norm", sorted(NORM_TYPES))
def test_mlp_has_the_asked_depth_activation_and_norm(activation, norm):
    model = build("model.depth=4", "model.width=8", f"activation={activation}", f"norm={norm}")
    assert isinstance(model, MLP)
    assert len(model.hidden) == 4
    for layer in model.hidden:
        assert type(layer.activation) is ACTIVATION_TYPES[activation]
        assert type(layer.norm) is NORM_TYPES[norm]
    assert [name for name, _ in model.layers()] == [
        "001_hidden",
        "002_hidden",
        "003_hidden",
        "004_hidden",
        "005_output",
    ]
    assert model(torch.randn(5, 32)).shape == (5, 4)


def test_activation_parameters_reach_the_module():
    assert (
        build("activation=leaky_relu", "activation.negative_slope=0.2").hidden[0].activation.negative_slope
        == 0.2
    )
    assert build("activation=elu", "activation.alpha=0.5").hidden[0].activation.alpha == 0.5


def test_layer_names_sort_input_to_output_and_match_across_depths():
    shallow = [name for name, _ in build("model.depth=5").layers()]
    deep = [name for name, _ in build("model.depth=50").layers()]
    assert shallow[:5] == deep[:5]  # a sweep over depth overlays layer k of every network
    names = [name for name, _ in build("model.depth=11").layers()]
    assert names == sorted(names) and names[0] == "001_hidden" and names[-1] == "012_output"


def test_residual_adds_the_input_back_only_where_widths_match():
    plain, residual = (
        build("model.depth=3", "activation=identity"),
        build("model.depth=3", "activation=identity", "model.residual=true"),
    )
    residual.load_state_dict(plain.state_dict())
    x = torch.randn(4, 32)
    h = plain.hidden[0](x)
    expected = residual.output(h + plain.hidden[1](h) + plain.hidden[2](h + plain.hidden[1](h)))
    torch.testing.assert_close(residual(x), expected)


@pytest.mark.parametrize("cell", ["rnn_tanh", "rnn_relu", "lstm", "gru"])
def test_rnn_reports_input_and_recurrent_matrices_per_layer(cell):
    model = build("model=rnn", f"model.cell={cell}", "model.num_layers=2")
    assert isinstance(model, RNN)
    assert [n for n, _ in model.layers()] == [
        "001_rnn1_ih",
        "002_rnn1_hh",
        "003_rnn2_ih",
        "004_rnn2_hh",
        "005_output",
    ]
    assert model(torch.rand(3, 10, 2)).shape == (3, 1)


# Initializer variances, measured on one large matrix: (init overrides, expected Var(W)).
FAN_IN, FAN_OUT = 400, 300
VARIANCES = {
    "xavier_uniform": (["init.gain=2.0"], 4.0 * 2 / (FAN_IN + FAN_OUT)),
    "xavier_normal": ([], 2 / (FAN_IN + FAN_OUT)),
    "kaiming_uniform": ([], 2 / FAN_IN),
    "kaiming_normal": ([], 2 / FAN_IN),
    "normal": (["init.std=0.3"], 0.09),
    "uniform": (["init.low=-0.3", "init.high=0.1"], 0.4**2 / 12),
    "orthogonal": (["init.gain=1.5"], 1.5**2 / FAN_IN),  # rows orthonormal: each row has norm gain
}


@pytest.mark.parametrize("name", sorted(VARIANCES))
def test_initializer_gives_the_variance_of_its_formula(name):
    overrides, expected = VARIANCES[name]
    config = validate(make_config(f"init={name}", *overrides))
    torch.manual_seed(0)
    w = nn.Linear(FAN_IN, FAN_OUT).weight
    INITIALIZERS[name](w.data, config.init)
    assert w.var().item() == pytest.approx(expected, rel=0.05)


def test_kaiming_fan_out_mode_uses_the_output_fan():
    config = validate(make_config("init=kaiming_normal", "init.mode=fan_out"))
    torch.manual_seed(0)
    w = torch.empty(FAN_OUT, FAN_IN)
    INITIALIZERS["kaiming_normal"](w, config.init)
    assert w.var().item() == pytest.approx(2 / FAN_OUT, rel=0.05)


def test_orthogonal_weights_have_every_singular_value_equal_to_gain():
    config = validate(make_config("init=orthogonal", "init.gain=0.5"))
    w = torch.empty(64, 64)
    INITIALIZERS["orthogonal"](w, config.init)
    torch.testing.assert_close(torch.linalg.svdvals(w), torch.full((64,), 0.5))


def test_constant_init_and_bias_setting_reach_every_layer():
    model = build("init=constant", "init.value=0.25", "init.bias=-1.0")
    for _, w in model.layers():
        assert torch.all(w == 0.25)
    for layer in model.hidden:
        assert torch.all(layer.linear.bias == -1.0)


def test_default_init_keeps_pytorch_weights_and_biases():
    """PyTorch's nn.Linear draws U(-1/sqrt(fan_in), 1/sqrt(fan_in)): variance 1 / (3 fan_in)."""
    model = build("init=default", "model.width=400")
    assert model.hidden[1].linear.weight.var().item() == pytest.approx(1 / (3 * 400), rel=0.05)
    assert model.hidden[0].linear.bias.abs().max() > 0


def test_norm_parameters_keep_their_identity_start():
    model = build("norm=layernorm", "init.bias=0.5")
    assert torch.all(model.hidden[0].norm.weight == 1) and torch.all(model.hidden[0].norm.bias == 0)
    assert torch.all(model.hidden[0].linear.bias == 0.5)


@pytest.mark.parametrize("recurrent_init", ["orthogonal", "identity", "normal"])
def test_recurrent_init_sets_spectral_radius_to_the_gain(recurrent_init):
    model = build(
        "model=rnn",
        "model.hidden_size=256",
        f"model.recurrent_init={recurrent_init}",
        "model.recurrent_gain=0.7",
    )
    w_hh = model.recurrent_weights()[0].detach()
    radius = torch.linalg.eigvals(w_hh).abs().max().item()
    assert radius == pytest.approx(0.7, rel=0.1)


def test_recurrent_init_sets_every_gate_block_of_an_lstm():
    model = build("model=rnn", "model.cell=lstm", "model.recurrent_init=identity", "model.recurrent_gain=0.9")
    w_hh = model.recurrent_weights()[0].detach()
    for block in w_hh.split(16):
        torch.testing.assert_close(block, 0.9 * torch.eye(16))


def test_recurrent_init_null_leaves_w_hh_to_the_init_group():
    model = build("model=rnn", "model.hidden_size=128", "init=normal", "init.std=0.05")
    assert model.recurrent_weights()[0].std().item() == pytest.approx(0.05, rel=0.1)
    assert not math.isclose(model.recurrent_weights()[0].std().item(), 0.7 / math.sqrt(128), rel_tol=0.1)


def test_dropout_follows_each_activation_only_when_asked():
    assert all(
        isinstance(layer.dropout, nn.Dropout) and layer.dropout.p == 0.3
        for layer in build("model.dropout=0.3").hidden
    )
    assert all(isinstance(layer.dropout, nn.Identity) for layer in build("model.dropout=0.0").hidden)


@pytest.mark.parametrize("cell, gates", [("lstm", 4), ("gru", 3)])
def test_init_group_sets_each_gate_block_of_a_gated_cell(cell, gates):
    model = build(
        "model=rnn", f"model.cell={cell}", "model.hidden_size=32", "init=orthogonal", "init.gain=1.0"
    )
    w_hh = model.recurrent_weights()[0].detach()
    assert w_hh.shape == (gates * 32, 32)
    for block in w_hh.split(32):
        torch.testing.assert_close(torch.linalg.svdvals(block), torch.ones(32))
