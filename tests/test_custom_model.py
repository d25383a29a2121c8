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

from gradexp.config import CONFIG_DIR
from gradexp.config.validate import validate
from gradexp.engine import Batches, train
from gradexp.models import build_model
from gradexp.tasks import build_task
from tests.conftest import interrupt_once_training, read_scalars, read_summary, run_cli, run_in_process

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


def first_step(cfg) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """The model as the engine builds it and the loss of the run's first batch, graph attached."""
    c = validate(cfg)
    torch.manual_seed(c.trainer.seed)
    task = build_task(c.task, c.trainer.seed)
    model = build_model(c, task)
    x, y = Batches(task, c.trainer.batch_size, c.trainer.seed).next()
    return model, x, y


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
    run = [*EVERYTHING, "trainer.steps=600", "trainer.checkpoint_every=40", "diagnostics.every=7"]
    assert run_cli(*run, "hydra.run.dir=whole", cwd=tmp_path).returncode == 0
    stopped = interrupt_once_training(
        [*run, "hydra.run.dir=cut"],
        tmp_path,
        started="cut/events.out.tfevents.*",
        wait=random.uniform(0.1, 0.5),
    )
    assert stopped.returncode == 130, stopped.stderr
    assert run_cli("trainer.resume=cut", cwd=tmp_path).returncode == 0
    whole, cut = read_summary(tmp_path / "whole"), read_summary(tmp_path / "cut")
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
            "model._target_=networks.Nowhere: cannot be imported",
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
            ["model=custom", "model._target_=networks.WrongOutput"],
            "model._target_=networks.WrongOutput: gives an output of shape (2, 3) for an input of shape "
            "(2, 32); task=blobs needs (2, 4)",
        ),
        (
            ["model=custom", "model._target_=networks.plain_stack", "activation=tanh"],
            "activation=tanh: applies to model=mlp",
        ),
        (["model=custom", "model._target_=networks.plain_stack", "norm=layernorm"], "norm=layernorm"),
    ],
)
def test_a_custom_model_mistake_is_one_line_naming_the_key(
    tmp_path, monkeypatch, capsys, overrides, expected
):
    shutil.copy(NETWORKS, tmp_path)
    result = run_in_process(
        *overrides, "trainer.steps=1", cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert "Traceback" not in result.stderr
