"""A user's own nn.Module, from the config (`model=custom model._target_=...`): its layers found
from the module tree in forward order, every signal measured on it equal to what autograd says,
its blocks reported, and every mistake one line naming model._target_."""

import math
import random
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.plugins.custom_scalar import layout_pb2

from gradexp.config import CONFIG_DIR
from gradexp.config.validate import validate
from gradexp.diagnostics.theory import max_derivative
from gradexp.engine import train
from gradexp.sinks.console import run_report
from gradexp.tasks import build_task
from tests.conftest import (
    first_step,
    read_scalars,
    read_summary,
    run_cli,
    run_in_process,
    whole_and_resumed,
)

NETWORKS = Path(__file__).with_name("networks.py")
SMALL = [
    "trainer.steps=1",
    "trainer.batch_size=64",
    "task.n_train=256",
    "task.n_val=128",
    "trainer.log_every=1",
    "diagnostics.every=1",
]
EVERYTHING = ["model=custom", "model._target_=networks.Everything"]
EVERYTHING_LAYERS = [  # forward order; `head` is `embed` (tied), `frozen` trains no weight
    "001_embed",
    "002_shared",
    "003_blocks.0.fc1",
    "004_blocks.0.fc2",
    "005_blocks.1.fc1",
    "006_blocks.1.fc2",
]


def config(*overrides: str):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("config", overrides=[*SMALL, *overrides])


def outputs_and_loss(model, x, y) -> tuple[dict[str, list[torch.Tensor]], torch.Tensor]:
    """Every output of every module that computes with a trainable weight, by module, and the loss."""
    outputs: dict[str, list[torch.Tensor]] = {}
    handles = [
        module.register_forward_hook(lambda m, i, out, name=name: outputs.setdefault(name, []).append(out))
        for name, module in model.named_modules()
        if name in ("embed", "head", "shared") or name.endswith(("fc1", "fc2"))
    ]
    loss = F.cross_entropy(model(x), y)
    for handle in handles:
        handle.remove()
    return outputs, loss


def test_grad_signal_is_autograds_dl_dy_for_every_layer_of_a_custom_model(tmp_path):
    """A residual branch, a module called twice, tied input and output embeddings and a frozen
    layer: the signal of each layer is the norm of dL/dy over every output y its weight made."""
    cfg = config(*EVERYTHING)
    s = train(cfg, tmp_path, show_progress=False)
    assert s["status"] == "completed" and s["layers"] == EVERYTHING_LAYERS
    model, x, y = first_step(cfg)
    outputs, loss = outputs_and_loss(model, x, y)
    owners = {"001_embed": ["embed", "head"], "002_shared": ["shared"]}
    for layer in EVERYTHING_LAYERS[2:]:
        owners[layer] = [layer[4:]]
    for layer, modules in owners.items():
        ys = [out for m in modules for out in outputs[m]]
        grads = torch.autograd.grad(loss, ys, retain_graph=True)
        expected = math.sqrt(sum(g.square().sum().item() for g in grads))
        assert s["grad_signal_first"][layer] == pytest.approx(expected, rel=1e-5), layer
    assert len(outputs["shared"]) == 2 and set(s["grad_signal_first"]) == set(EVERYTHING_LAYERS)


def test_every_parameter_that_gets_a_gradient_counts_in_the_total_and_blocks_are_their_parameters(tmp_path):
    """grad_norm/total covers biases, norm scales and a bare nn.Parameter (the frozen weight gets
    no gradient); a block's norm is over its own parameters; the tied weight's gradient is the sum
    over both of its uses."""
    cfg = config(*EVERYTHING)
    s = train(cfg, tmp_path, show_progress=False)
    model, x, y = first_step(cfg)
    F.cross_entropy(model(x), y).backward()
    trained = [p for p in model.parameters() if p.requires_grad]
    assert model.scale.grad is not None and model.frozen.weight.grad is None
    total = math.sqrt(sum(p.grad.square().sum().item() for p in trained))
    assert read_scalars(tmp_path)["grad_norm/total"][0] == pytest.approx(total, rel=1e-5)
    assert s["grad_norm_first"]["001_embed"] == pytest.approx(model.embed.weight.grad.norm().item(), rel=1e-5)
    assert s["blocks"] == ["001_blocks.0", "002_blocks.1"]
    for name, block in zip(s["blocks"], model.blocks):
        expected = math.sqrt(sum(p.grad.square().sum().item() for p in block.parameters()))
        assert s["block_grad_norm_first"][name] == pytest.approx(expected, rel=1e-5)


def test_the_residual_stream_is_measured_at_every_block_boundary(tmp_path):
    cfg = config(*EVERYTHING)
    s = train(cfg, tmp_path, show_progress=False)
    model, x, y = first_step(cfg)
    boundaries = []
    handles = [b.register_forward_hook(lambda m, i, out: boundaries.append(out)) for b in model.blocks]
    loss = F.cross_entropy(model(x), y)
    for handle in handles:
        handle.remove()
    grads = torch.autograd.grad(loss, boundaries)
    for name, out, grad in zip(s["blocks"], boundaries, grads):
        assert s["resid_std_first"][name] == pytest.approx(out.std().item(), rel=1e-5)
        assert s["resid_grad_first"][name] == pytest.approx(grad.norm().item(), rel=1e-5)
    scalars = read_scalars(tmp_path)
    assert {"block_grad_norm/001_blocks.0", "resid_std/002_blocks.1", "resid_grad/001_blocks.0"} <= set(
        scalars
    )
    assert s["verdict"] in ("stable", "vanishing", "exploding")  # measured along the stream


def test_activation_sites_are_named_after_the_layer_before_them(tmp_path):
    s = train(config(*EVERYTHING), tmp_path, show_progress=False)
    assert list(s["act_std_first"]) == ["002_shared", "003_blocks.0.fc1", "005_blocks.1.fc1"]
    assert list(s["dead_first"]) == ["003_blocks.0.fc1", "005_blocks.1.fc1"]  # ReLUs
    assert list(s["saturation_first"]) == ["002_shared"]  # the tanh


def test_a_factory_trains_with_the_task_shapes_and_init_default_keeps_its_own_weights(tmp_path):
    """`plain_stack` is a function; it is given input_shape and d_out. init=default leaves its
    weights as PyTorch made them; another init replaces them."""
    own = config("model=custom", "model._target_=networks.plain_stack", "+model.depth=3", "init=default")
    s = train(own, tmp_path / "own", show_progress=False)
    assert s["layers"] == ["001_0", "002_2", "003_4", "004_6"] and s["status"] == "completed"
    c = validate(own)
    torch.manual_seed(c.trainer.seed)
    build_task(c.task, c.trainer.seed)
    from networks import plain_stack

    pytorch_made = plain_stack((32,), 4, depth=3)
    assert s["weight_norm_first"]["001_0"] == pytest.approx(pytorch_made[0].weight.norm().item(), rel=1e-6)
    orthogonal = train(
        config("model=custom", "model._target_=networks.plain_stack", "+model.depth=3", "init=orthogonal"),
        tmp_path / "orthogonal",
        show_progress=False,
    )
    assert orthogonal["weight_norm_first"]["002_2"] == pytest.approx(math.sqrt(32), rel=1e-5)


def test_a_custom_model_sweeps_as_a_multirun(tmp_path):
    shutil.copy(NETWORKS, tmp_path)
    result = run_cli(
        "-m",
        "model=custom",
        "model._target_=networks.plain_stack",
        "+model.depth=2,6",
        "init=xavier_normal",
        "trainer.steps=5",
        "task.n_train=256",
        "hydra.sweep.dir=sweep",
        cwd=tmp_path,
        module=False,  # the console script: the working directory is not on its sys.path
    )
    assert result.returncode == 0, result.stderr
    layers = [read_summary(d)["layers"] for d in sorted((tmp_path / "sweep").glob("0*"))]
    assert [len(names) for names in layers] == [3, 7]
    assert (tmp_path / "sweep" / "report" / "norm_vs_depth.png").is_file()


def test_an_interrupted_custom_model_resumes_to_the_run_never_interrupted(tmp_path):
    shutil.copy(NETWORKS, tmp_path)
    # 1500 steps, about 4 s on one thread: still training when Ctrl-C comes, at most 0.7 s in
    run = [*EVERYTHING, "trainer.steps=1500", "trainer.checkpoint_every=40", "diagnostics.every=7"]
    whole, cut = whole_and_resumed(run, tmp_path, wait=random.uniform(0.1, 0.5))
    for key in (
        "final_val_loss",
        "grad_norm_last",
        "block_grad_norm_last",
        "resid_grad_last",
        "grad_signal_last",
    ):
        assert cut[key] == whole[key], key


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["model=custom"], "model._target_: missing; allowed: an importable nn.Module class or factory"),
        (
            ["model=custom", "model._target_=networks.Nowhere"],
            "model._target_=networks.Nowhere: cannot be imported: AttributeError: module 'networks' has "
            "no attribute 'Nowhere'",
        ),
        (
            ["model=custom", "model._target_=no_such_module.Net"],
            "model._target_=no_such_module.Net: cannot be imported",
        ),
        (
            ["model=custom", "model._target_=networks.plain_stack", "+model.widht=8"],
            "model._target_=networks.plain_stack: does not take these arguments",
        ),
        (
            ["model=custom", "model._target_=torch.nn.Linear"],
            "model._target_=torch.nn.Linear: does not take these arguments: missing a required argument: "
            "'in_features'",
        ),
        (
            ["model=custom", "model._target_=broken.Net"],
            "model._target_=broken.Net: cannot be imported: ModuleNotFoundError: "
            "No module named 'einops_missing'",
        ),
        (
            ["model=custom", "model._target_=networks.WrongOutput"],
            "model._target_=networks.WrongOutput: gives an output of shape (2, 3) for an input of shape "
            "(2, 32); task=blobs needs (2, 4)",
        ),
        (
            ["model=custom", "model._target_=networks.plain_stack", "activation=tanh"],
            "activation=tanh: applies to model=mlp",
        ),
        (["model=custom", "model._target_=networks.plain_stack", "norm=layernorm"], "norm=layernorm"),
        (
            ["model=custom", "model._target_=networks.plain_stack", "model.depth=3"],
            "model.depth: not in configs/model/custom.yaml: a keyword argument of the target is added with + "
            "(+model.depth=...)",
        ),
    ],
)
def test_a_custom_model_mistake_is_one_line_naming_the_key(
    tmp_path, monkeypatch, capsys, overrides, expected
):
    shutil.copy(NETWORKS, tmp_path)
    (tmp_path / "broken.py").write_text("import einops_missing  # a dependency that is not installed\n")
    result = run_in_process(
        *overrides, "trainer.steps=1", cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_attention_layers_sit_in_their_block_where_they_run(tmp_path):
    """MultiheadAttention's in_proj is one weight of a module with several outputs, and its
    out_proj's forward never runs: both are ordered where the attention runs, before the block's
    MLP, and neither gets a signal it could not have."""
    s = train(
        config("model=custom", "model._target_=networks.TinyTransformer"), tmp_path, show_progress=False
    )
    assert s["layers"] == [
        "001_embed",
        "002_blocks.0.attn.in_proj_weight",
        "003_blocks.0.attn.out_proj",
        "004_blocks.0.fc1",
        "005_blocks.0.fc2",
        "006_blocks.1.attn.in_proj_weight",
        "007_blocks.1.attn.out_proj",
        "008_blocks.1.fc1",
        "009_blocks.1.fc2",
        "010_head",
    ]
    assert set(s["grad_signal_first"]) == {"001_embed", "004_blocks.0.fc1", "005_blocks.0.fc2"} | {
        "008_blocks.1.fc1",
        "009_blocks.1.fc2",
        "010_head",
    }
    assert all(math.isfinite(v) for v in s["grad_signal_first"].values())
    assert list(s["saturation_first"]) == ["004_blocks.0.fc1", "008_blocks.1.fc1"]  # the GELUs
    assert s["blocks"] == ["001_blocks.0", "002_blocks.1"] and s["verdict"] is not None


def test_a_cnn_with_in_place_and_learned_activations_is_measured(tmp_path):
    """Conv kernels are layers; an in-place SiLU is measured on its input as it was before it ran
    (not on its own output, which overwrote it); a PReLU's dead units are read from its inputs."""
    cfg = config("model=custom", "model._target_=networks.ConvNet")
    s = train(cfg, tmp_path, show_progress=False)
    assert s["status"] == "completed"
    assert s["layers"][:3] == ["001_stem", "002_stages.0.conv1", "003_stages.0.conv2"]
    assert s["blocks"] == ["001_stages.0", "002_stages.1"]
    model, x, y = first_step(cfg)
    block = model.stages[0]
    with torch.no_grad():
        h = model.stem_act(model.stem(x.view(-1, 1, 4, 8)))
        before_silu = block.bn1(block.conv1(h))
    grad = torch.func.vmap(torch.func.grad(F.silu))(before_silu.flatten()).view_as(before_silu)
    threshold = 0.1 * max_derivative(torch.nn.SiLU())  # saturation_fraction x max SiLU'
    assert s["saturation_first"]["002_stages.0.conv1"] == pytest.approx(
        (grad < threshold).float().mean().item()
    )
    assert 0 <= s["dead_first"]["003_stages.0.conv2"] <= 1


def test_a_network_of_many_layers_reads_by_block_and_charts_of_at_most_32_curves(tmp_path):
    """62 layers in 30 blocks: the terminal's report is the per-block table, and no TensorBoard
    chart overlays more than 32 curves."""
    s = train(config(*EVERYTHING, "+model.depth=30"), tmp_path, show_progress=False)
    assert len(s["layers"]) == 62 and len(s["blocks"]) == 30
    parts = run_report(s, 200)
    assert "62 layers in 30 blocks" in parts[0]
    assert parts[1].title.startswith("Per block") and parts[1].row_count == 30
    events = [e for f in tmp_path.glob("events.out.tfevents.*") for e in EventFileLoader(str(f)).Load()]
    [config_value] = [v for e in events for v in e.summary.value if v.tag == "custom_scalars__config__"]
    layout = layout_pb2.Layout.FromString(config_value.tensor.string_val[0])
    charts = [chart for category in layout.category for chart in category.chart]
    for chart in charts:
        names = chart.multiline.tag[0].split("(", 1)[-1].rstrip(")$").split("|")
        assert len(names) <= 32, chart.title
    grad_charts = [c.title for c in charts if c.title.startswith("gradient norm per layer")]
    assert grad_charts == [
        "gradient norm per layer (weights): 001_embed to 032_blocks.14.fc2",
        "gradient norm per layer (weights): 033_blocks.15.fc1 to 062_blocks.29.fc2",
    ]
    scalars = read_scalars(tmp_path)
    assert {f"grad_norm/{name}" for name in s["layers"]} <= set(scalars)


def test_an_activation_of_one_value_per_example_is_one_unit(tmp_path):
    """A ReLU on a (batch,) tensor: dead (the one unit is <= 0 for the whole batch), act_mean and
    act_std as defined, where the per-unit reductions once assumed a unit dimension."""
    cfg = config("model=custom", "model._target_=networks.Gated", "init=default")
    model, x, _ = first_step(cfg)
    with torch.no_grad():
        gate = model.act(model.gate(x.flatten(1)).squeeze(1))
    s = train(cfg, tmp_path, show_progress=False)
    assert s["status"] == "completed"
    assert s["dead_first"] == {"002_gate": float((gate <= 0).all())}
    assert s["act_mean_first"]["002_gate"] == pytest.approx(gate.mean().item(), rel=1e-6)
    assert s["act_std_first"]["002_gate"] == pytest.approx(gate.std().item(), rel=1e-5)
