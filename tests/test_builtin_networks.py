"""The built-in CNN (plain and ResNet) and Transformer (Pre-LN and Post-LN), and the tasks they
read: every layer's signal equal to autograd's, the gradient stories they exist to tell, and
the next-token task's loss floor equal to the source's entropy computed by brute force."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from torch import nn

from gradexp.config import CONFIG_DIR
from gradexp.config.errors import ConfigError
from gradexp.config.validate import validate
from gradexp.engine import Batches, train
from gradexp.models import build_model
from gradexp.tasks import build_task, conditional_entropy, source_table
from tests.conftest import first_step, read_scalars, read_summary, run_in_process

SMALL = [
    "trainer.steps=1",
    "trainer.batch_size=32",
    "task.n_train=128",
    "task.n_val=64",
    "trainer.log_every=1",
    "diagnostics.every=1",
    "diagnostics.figures=false",
]
RESNET = [
    "model=cnn",
    "task=images",
    "task.size=8",
    "model.depth=4",
    "model.channels=8",
    "model.residual=true",
]
TRANSFORMER = ["model=transformer", "task=tokens", "task.seq_len=8", "model.depth=2", "model.d_model=16"]


def config(*overrides: str):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("config", overrides=[*SMALL, *overrides])


def loss_of(output, y):
    return F.cross_entropy(output.flatten(0, -2), y.flatten())


@pytest.mark.parametrize("network", [RESNET, TRANSFORMER], ids=["resnet", "transformer"])
def test_grad_signal_is_autograds_dl_dy_for_every_layer(tmp_path, network):
    """Every layer of the built-in networks (convolutions, embeddings, attention, MLP, head): the
    recorded signal is ||dL/dy|| for the output y of the module that holds the weight."""
    cfg = config(*network)
    s = train(cfg, tmp_path, show_progress=False)
    assert s["status"] == "completed"
    model, x, y = first_step(cfg)
    outputs = {}
    holders = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear | nn.Embedding)}
    handles = [
        m.register_forward_hook(lambda m, i, out, n=n: outputs.setdefault(n, out)) for n, m in holders.items()
    ]
    loss = loss_of(model(x), y)
    for handle in handles:
        handle.remove()
    assert len(s["layers"]) == len(holders)
    for layer in s["layers"]:
        path = layer.split("_", 1)[1]
        (grad,) = torch.autograd.grad(loss, outputs[path], retain_graph=True)
        assert s["grad_signal_first"][layer] == pytest.approx(grad.norm().item(), rel=1e-4), layer


def block_ratio(depth: int, position: str, seed: int) -> float:
    """The last block's gradient norm over the first's, at step 0."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                "model=transformer",
                "task=tokens",
                f"model.depth={depth}",
                f"model.norm_position={position}",
                f"trainer.seed={seed}",
                "trainer.steps=1",
                "task.n_train=256",
                "task.n_val=64",
                "diagnostics=off",
            ],
        )
    c = validate(cfg)
    torch.manual_seed(seed)
    task = build_task(c.task, seed)
    model = build_model(c, task)
    x, y = Batches(task, c.trainer.batch_size, seed).next()
    loss_of(model(x), y).backward()
    norms = [math.sqrt(sum(p.grad.square().sum().item() for p in b.parameters())) for b in model.blocks]
    return norms[-1] / norms[0]


def test_post_ln_gradients_lean_toward_the_output_where_pre_ln_ones_do_not():
    """Xiong et al. (2020): at initialization, Post-LN's block gradients hold up (or grow) toward
    the output, while Pre-LN's shrink there (each block's LayerNorm divides by a residual stream
    that grows with depth). Over three seeds and two depths, the last-to-first ratio is several
    times larger for Post-LN."""
    for depth in (12, 24):
        post = [block_ratio(depth, "post", seed) for seed in range(3)]
        pre = [block_ratio(depth, "pre", seed) for seed in range(3)]
        assert min(post) > 2 * max(pre), (depth, post, pre)
        assert min(post) > 0.7 and max(pre) < 0.4, (depth, post, pre)


def test_engine_records_the_post_ln_block_gradients_it_is_tested_on(tmp_path):
    """The same ratio, read from summary.json and TensorBoard, as a user would read it."""
    s = train(
        config(*TRANSFORMER, "model.depth=4", "model.norm_position=post"), tmp_path, show_progress=False
    )
    assert s["blocks"] == ["001_blocks.0", "002_blocks.1", "003_blocks.2", "004_blocks.3"]
    scalars = read_scalars(tmp_path)
    for block, value in s["block_grad_norm_first"].items():
        assert scalars[f"block_grad_norm/{block}"][0] == pytest.approx(value, rel=1e-6)


def first_layer_gradient(residual: bool, tmp_path) -> float:
    overrides = [
        "model=cnn",
        "task=images",
        "task.size=8",
        "model.depth=20",
        "model.channels=8",
        f"model.residual={str(residual).lower()}",
        "init=default",
    ]
    s = train(config(*overrides), tmp_path / str(residual), show_progress=False)
    return s["grad_norm_first"][s["layers"][0]]


def test_a_deep_plain_cnn_starves_its_first_layer_where_the_resnet_does_not(tmp_path):
    """With PyTorch's default initialization (Var(W) = 1/(3 fan_in)), each plain ReLU layer
    shrinks the signal; the identity skips carry it to the first layer."""
    plain, resnet = first_layer_gradient(False, tmp_path), first_layer_gradient(True, tmp_path)
    assert plain < 1e-3 * resnet, (plain, resnet)


def brute_force_entropy(table: torch.Tensor, vocab: int, order: int, seq_len: int) -> float:
    """Mean over the predicted tokens x_1..x_T of H(x_t | x_<t), by listing every sequence: the
    first `order` tokens uniform, then the table's row for the last `order` tokens."""
    total = 0.0
    for seq in itertools.product(range(vocab), repeat=seq_len + 1):
        p, steps = vocab ** (-order), []
        for t in range(order, seq_len + 1):
            context = sum(tok * vocab ** (order - 1 - k) for k, tok in enumerate(seq[t - order : t]))
            q = table[context, seq[t]].item()
            steps.append(q)
            p *= q
        nll = -sum(math.log(q) for q in steps) + (order - 1) * math.log(vocab)  # x_1 .. x_{order-1}
        total += p * nll
    return total / seq_len


@pytest.mark.parametrize("vocab, order, seq_len", [(2, 1, 5), (3, 2, 4)])
def test_the_loss_floor_is_the_sources_entropy(vocab, order, seq_len):
    cfg = config(
        "model=rnn", "task=tokens", f"task.vocab={vocab}", f"task.order={order}", f"task.seq_len={seq_len}"
    )
    c = validate(cfg)
    task = build_task(c.task, c.trainer.seed)
    table = source_table(c.task, torch.Generator().manual_seed(c.trainer.seed))  # the task's first draw
    expected = brute_force_entropy(table, vocab, order, seq_len)
    assert conditional_entropy(table, vocab, order, seq_len) == pytest.approx(expected, rel=1e-9)
    assert task.loss_floor == pytest.approx(expected, rel=1e-9)


def test_the_recorded_loss_floor_is_what_the_source_allows_at_best(tmp_path):
    """summary.json's loss_floor, against the source's own predictions scored on the
    validation sequences (an estimate: within a few standard errors)."""
    cfg = config("model=rnn", "task=tokens", "task.n_val=2000", "task.seq_len=16")
    s = train(cfg, tmp_path, show_progress=False)
    c = validate(cfg)
    task = build_task(c.task, c.trainer.seed)
    table = source_table(c.task, torch.Generator().manual_seed(c.trainer.seed))
    x, y = task.x_val, task.y_val
    context = x[:, :-1] * c.task.vocab + x[:, 1:]  # order 2: the two tokens before each target
    nll = -table[context, y[:, 1:]].log()
    first = torch.full((x.shape[0], 1), math.log(c.task.vocab), dtype=nll.dtype)  # x_1: one token before it
    estimate = torch.cat([first, nll], dim=1).mean().item()
    assert s["loss_floor"] == pytest.approx(estimate, abs=0.03)
    assert 0 < s["loss_floor"] < math.log(c.task.vocab)


def test_the_rnn_reads_tokens_through_an_embedding_and_predicts_every_position(tmp_path):
    s = train(config("model=rnn", "task=tokens", "task.seq_len=12"), tmp_path, show_progress=False)
    assert s["status"] == "completed"
    assert s["layers"] == ["001_embed", "002_rnn1_ih", "003_rnn1_hh", "004_output"]
    assert len(next(iter(s["grad_through_time_first"].values()))) == 12
    model, x, _ = first_step(config("model=rnn", "task=tokens", "task.seq_len=12"))
    assert model(x).shape == (32, 12, 16)


def test_images_are_class_structured_and_the_mlp_reads_them_flat(tmp_path):
    c = validate(config("task=images", "task.n_train=1000"))
    task = build_task(c.task, 0)
    assert task.x_train.shape == (1000, 3, 16, 16) and task.d_out == 10
    assert torch.bincount(task.y_train).tolist() == [100] * 10
    means = torch.stack([task.x_train[task.y_train == k].mean(0).flatten() for k in range(10)])
    predicted = torch.cdist(task.x_val.flatten(1), means).argmin(1)  # nearest class mean
    assert (predicted == task.y_val).float().mean() > 0.5
    s = train(config("task=images", "model.depth=2", "model.width=16"), tmp_path, show_progress=False)
    assert s["status"] == "completed" and s["loss_floor"] is None


@pytest.mark.parametrize("norm, kind", [("batchnorm", nn.BatchNorm2d), ("layernorm", nn.GroupNorm)])
def test_the_norm_group_takes_its_2d_form_in_the_cnn(norm, kind):
    model, _, _ = first_step(config(*RESNET, f"norm={norm}"))
    norms = [m for m in model.modules() if isinstance(m, kind)]
    assert len(norms) == 1 + 2 * 2  # the stem's and two per block
    if kind is nn.GroupNorm:
        assert all(m.num_groups == 1 for m in norms)  # each example over all channels and positions


def test_the_transformer_defaults_to_gelu_and_xavier_and_takes_the_groups():
    assert config("model=transformer").activation.name == "gelu"
    assert config("model=transformer").init.name == "xavier_uniform"
    assert config("model=transformer", "activation=relu").activation.name == "relu"
    assert config().activation.name == "relu" and config().init.name == "kaiming_normal"
    model, _, _ = first_step(config(*TRANSFORMER, "activation=tanh"))
    assert all(isinstance(b.mlp.act, nn.Tanh) for b in model.blocks)


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (
            ["model=cnn", "task=blobs"],
            "task=blobs: model=cnn cannot read this task's data; allowed: task=images",
        ),
        (["model=transformer", "task=images"], "task=images: model=transformer cannot read this task's data"),
        (["model=mlp", "task=tokens"], "task=tokens: model=mlp cannot read this task's data"),
        (["model=transformer", "task=mnist"], "task=mnist: model=transformer cannot read this task's data"),
        (
            ["model=cnn", "task=images", "model.depth=7"],
            "model.depth=7: out of range; allowed: an even integer",
        ),
        (
            ["model=transformer", "task=tokens", "model.heads=5"],
            "model.heads=5: out of range; allowed: a divisor",
        ),
        (["model=transformer", "task=tokens", "model.norm_position=middle"], "model.norm_position=middle"),
        (["task=tokens", "model=rnn", "task.order=9"], "task.order=9: out of range"),
    ],
)
def test_a_model_and_task_that_do_not_fit_are_refused_in_one_line(
    tmp_path, monkeypatch, capsys, overrides, expected
):
    result = run_in_process(
        *overrides, "trainer.steps=1", cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr


def test_a_custom_model_reads_tokens_and_predicts_every_position(tmp_path, monkeypatch):
    """The same Transformer, given as a user's own module: it trains on tokens, and one that
    predicts once per sequence is refused in one line naming model._target_."""
    (tmp_path / "tokennets.py").write_text(
        "from torch import nn\n"
        "class PerPosition(nn.Module):\n"
        "    def __init__(self, d_out, width=8):\n"
        "        super().__init__()\n"
        "        self.embed, self.head = nn.Embedding(d_out, width), nn.Linear(width, d_out)\n"
        "    def forward(self, x):\n"
        "        return self.head(self.embed(x))\n"
        "class PerSequence(PerPosition):\n"
        "    def forward(self, x):\n"
        "        return self.head(self.embed(x).mean(1))\n"
    )
    monkeypatch.chdir(tmp_path)
    s = train(
        config("model=custom", "model._target_=tokennets.PerPosition", "task=tokens"),
        tmp_path / "run",
        show_progress=False,
    )
    assert s["status"] == "completed" and s["layers"] == ["001_embed", "002_head"]
    with pytest.raises(
        ConfigError, match=r"model._target_=tokennets.PerSequence: gives an output of shape \(2, 16\)"
    ):
        train(
            config("model=custom", "model._target_=tokennets.PerSequence", "task=tokens"),
            tmp_path / "bad",
            show_progress=False,
        )
    assert "task=tokens needs (2, 32, 16)" in read_summary(tmp_path / "bad")["error"]
