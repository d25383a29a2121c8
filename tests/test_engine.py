"""The training engine, through the real `train(cfg)`: what it records, and the textbook
behaviour the records must show."""

import json
import math
import struct

import pytest
import torch

from gradexp.config.validate import validate
from gradexp.engine import Batches, train
from gradexp.models import build_model
from gradexp.tasks import build_task
from tests.conftest import make_config, read_scalars, read_summary

SUMMARY_KEYS = {
    "status",
    "steps_completed",
    "layers",
    "grad_norm_first",
    "grad_norm_last",
    "final_train_loss",
    "final_val_loss",
    "final_val_acc",
    "diverged_step",
    "first_nonfinite_layer",
    "wall_time_s",
    "device",
    "config",
    "verdict",
    "verdict_step",
    "verdict_last",
    "verdict_last_step",
    "signal_factor_measured",
    "signal_factor_measured_last",
}


def test_a_figure_that_cannot_be_drawn_costs_the_run_nothing_else(run_dir, monkeypatch, capsys):
    """The figures are drawn (and matplotlib imported) after training, before summary.json: a
    failure there is one line on stderr, and the run keeps its summary and its status."""

    def broken(data):
        raise ImportError("matplotlib is broken here")

    monkeypatch.setattr("gradexp.diagnostics.report.draw", broken)
    train(make_config(), run_dir, show_progress=False)
    assert read_summary(run_dir)["status"] == "completed"
    assert (
        "the end-of-run figures were not drawn: ImportError: matplotlib is broken here"
        in capsys.readouterr().err
    )
    assert not (run_dir / "figures").exists()


def test_completed_run_writes_summary_with_every_documented_field(run_dir):
    returned = train(make_config(), run_dir, show_progress=False)
    summary = read_summary(run_dir)
    assert SUMMARY_KEYS <= set(summary)
    assert summary == json.loads(json.dumps(returned))
    assert summary["status"] == "completed" and summary["steps_completed"] == 20
    assert summary["layers"] == ["001_hidden", "002_hidden", "003_hidden", "004_output"]
    assert set(summary["grad_norm_first"]) == set(summary["grad_norm_last"]) == set(summary["layers"])
    assert 0 <= summary["final_val_acc"] <= 1 and summary["final_val_loss"] > 0
    assert summary["diverged_step"] is None and summary["first_nonfinite_layer"] is None
    assert summary["device"] == ("cuda" if torch.cuda.is_available() else "cpu")  # trainer.device=auto
    assert summary["config"]["model"]["depth"] == 3


def test_tensorboard_has_losses_lr_and_one_curve_per_layer(run_dir):
    train(make_config("trainer.log_every=5"), run_dir, show_progress=False)
    scalars = read_scalars(run_dir)
    for layer in read_summary(run_dir)["layers"]:
        assert sorted(scalars[f"grad_norm/{layer}"]) == [0, 5, 10, 15, 19]
    assert sorted(scalars["loss/train"]) == [0, 5, 10, 15, 19]
    assert sorted(scalars["loss/val"]) == sorted(scalars["acc/val"]) == [0, 10, 20]
    assert scalars["lr"][0] == pytest.approx(1e-3)
    assert "grad_norm/total" in scalars and "grad_norm/total_clipped" not in scalars


def test_step_zero_is_the_gradient_of_the_first_batch_before_any_update(run_dir):
    """trainer.steps=1 is an at-initialization probe: its norms equal a by-hand backward pass."""
    cfg = make_config("trainer.steps=1")
    summary = train(cfg, run_dir, show_progress=False)
    config = validate(cfg)
    torch.manual_seed(config.trainer.seed)
    task = build_task(config.task, config.trainer.seed)
    model = build_model(config, task)
    x, y = Batches(task, config.trainer.batch_size, config.trainer.seed).next()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    for name, weight in model.layers():
        assert summary["grad_norm_first"][name] == pytest.approx(weight.grad.norm().item(), rel=1e-5)
    assert summary["steps_completed"] == 1 and summary["grad_norm_last"] == summary["grad_norm_first"]


def test_sigmoid_gradients_vanish_with_depth(tmp_path):
    """Each sigmoid layer multiplies the back-propagated signal by at most 1/4, so the first
    layer's gradient is orders of magnitude smaller than the last hidden layer's."""
    summary = train(
        make_config(
            "model.depth=12", "model.width=64", "activation=sigmoid", "init=xavier_uniform", "trainer.steps=1"
        ),
        tmp_path,
        show_progress=False,
    )
    norms = [summary["grad_norm_first"][n] for n in summary["layers"]]
    assert norms[0] < norms[10] * 1e-4
    assert all(a < b for a, b in zip(norms[:11], norms[1:11]))  # monotone towards the input


def test_relu_with_he_init_keeps_gradients_within_an_order_of_magnitude(tmp_path):
    summary = train(
        make_config(
            "model.depth=12", "model.width=128", "activation=relu", "init=kaiming_normal", "trainer.steps=1"
        ),
        tmp_path,
        show_progress=False,
    )
    hidden = [summary["grad_norm_first"][n] for n in summary["layers"][:-1]]
    assert max(hidden) / min(hidden) < 10


def test_large_weights_diverge_as_a_result_not_a_crash(run_dir):
    cfg = make_config(
        "model.depth=8",
        "init=normal",
        "init.std=30.0",
        "activation=identity",
        "optimizer=sgd",
        "optimizer.lr=1.0",
        "trainer.steps=50",
    )
    summary = train(cfg, run_dir, show_progress=False)
    assert summary["status"] == "diverged"
    step = summary["diverged_step"]
    assert step is not None and summary["steps_completed"] == step
    assert summary["first_nonfinite_layer"] in summary["layers"]
    assert summary["final_val_loss"] is None
    # TensorBoard holds the steps up to and including the diverged one, nothing after it
    scalars = read_scalars(run_dir)
    assert max(scalars["loss/train"]) == step
    assert not math.isfinite(scalars[f"grad_norm/{summary['first_nonfinite_layer']}"][step])
    assert all(math.isfinite(v) for s, v in scalars["loss/train"].items() if s < step)
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "diverged"


def test_first_nonfinite_layer_is_the_first_input_to_output(tmp_path):
    """Exploding gradients grow towards the input, so the first layer overflows first."""
    cfg = make_config(
        "model.depth=10",
        "model.width=64",
        "init=normal",
        "init.std=3.0",
        "init.bias=0.0",
        "activation=identity",
        "trainer.steps=5",
        "optimizer=sgd",
        "optimizer.lr=0.01",
    )
    summary = train(cfg, tmp_path, show_progress=False)
    assert summary["status"] == "diverged"
    assert summary["first_nonfinite_layer"] == "001_hidden"


def test_clipping_by_norm_records_both_totals_and_bounds_the_update(run_dir):
    train(make_config("trainer.clip.max_norm=0.01"), run_dir, show_progress=False)
    scalars = read_scalars(run_dir)
    for step, before in scalars["grad_norm/total"].items():
        after = scalars["grad_norm/total_clipped"][step]
        assert after == pytest.approx(min(before, 0.01), rel=1e-3)
    assert max(scalars["grad_norm/total"].values()) > 0.01  # clipping actually happened


def test_clipping_by_value_bounds_every_element(tmp_path):
    train(make_config("trainer.clip.value=1e-4", "model.depth=2"), tmp_path, show_progress=False)
    scalars = read_scalars(tmp_path)
    n_params = 32 * 16 + 16 + 16 * 16 + 16 + 16 * 4 + 4
    for after in scalars["grad_norm/total_clipped"].values():
        assert after <= 1e-4 * math.sqrt(n_params) * (1 + 1e-5)


def test_gradient_accumulation_matches_one_large_batch(tmp_path):
    """Two micro-batches of 32 give the gradient of the batch of 64 that they make up."""
    accumulated = train(
        make_config("trainer.batch_size=32", "trainer.grad_accum=2", "trainer.steps=1"),
        tmp_path / "a",
        show_progress=False,
    )
    large = train(
        make_config("trainer.batch_size=64", "trainer.steps=1"), tmp_path / "b", show_progress=False
    )
    for layer, norm in large["grad_norm_first"].items():
        assert accumulated["grad_norm_first"][layer] == pytest.approx(norm, rel=1e-4)


@pytest.mark.parametrize(
    "scheduler, lr_at_10", [("step", 1e-3 * 0.5), ("exponential", 1e-3 * 0.9**10), ("cosine", 1e-3 * 0.5)]
)
def test_lr_schedules_are_recorded(tmp_path, scheduler, lr_at_10):
    extra = {"step": ["scheduler.step_size=10"], "exponential": ["scheduler.gamma=0.9"], "cosine": []}[
        scheduler
    ]
    train(make_config(f"scheduler={scheduler}", *extra), tmp_path, show_progress=False)
    assert read_scalars(tmp_path)["lr"][10] == pytest.approx(lr_at_10, rel=1e-5)


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw"])
def test_every_optimizer_lowers_the_training_loss(tmp_path, optimizer):
    summary = train(
        make_config(f"optimizer={optimizer}", "trainer.steps=60", "task.separation=6.0"),
        tmp_path,
        show_progress=False,
    )
    losses = read_scalars(tmp_path)["loss/train"]
    assert summary["status"] == "completed"
    assert summary["final_train_loss"] < losses[0]


@pytest.mark.parametrize("cell", ["rnn_tanh", "rnn_relu", "lstm", "gru"])
def test_rnn_cells_train_on_the_adding_problem(tmp_path, cell):
    summary = train(
        make_config("model=rnn", f"model.cell={cell}", "optimizer.lr=0.01"), tmp_path, show_progress=False
    )
    assert summary["status"] == "completed" and summary["final_val_acc"] is None
    assert summary["layers"][-1] == "003_output"
    assert summary["final_train_loss"] < 0.5 * read_scalars(tmp_path)["loss/train"][0]


def test_same_config_and_seed_give_the_same_numbers(tmp_path):
    cfg = make_config("norm=batchnorm", "model.dropout=0.1")
    a = train(cfg, tmp_path / "a", show_progress=False)
    b = train(cfg, tmp_path / "b", show_progress=False)
    for key in ("grad_norm_first", "grad_norm_last", "final_train_loss", "final_val_loss", "final_val_acc"):
        assert a[key] == b[key]
    c = train(
        make_config("norm=batchnorm", "model.dropout=0.1", "trainer.seed=1"),
        tmp_path / "c",
        show_progress=False,
    )
    assert c["grad_norm_first"] != a["grad_norm_first"]


def test_a_failing_run_still_leaves_its_summary_and_events(run_dir, monkeypatch):
    from gradexp import engine

    calls = {"n": 0}
    original = engine.clip_gradients

    def broken(*args):
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("simulated failure in the training step")
        return original(*args)

    monkeypatch.setattr(engine, "clip_gradients", broken)
    with pytest.raises(RuntimeError, match="simulated"):
        train(make_config("trainer.clip.max_norm=1.0"), run_dir, show_progress=False)
    summary = read_summary(run_dir)
    assert summary["status"] == "failed" and "simulated failure" in summary["error"]
    assert summary["steps_completed"] == 4
    assert sorted(read_scalars(run_dir)["loss/train"]) == [0, 1, 2, 3]


def test_train_refuses_an_invalid_config_before_building_anything(run_dir):
    """Refused before any training, yet with a summary that says why: in a sweep, that job's row."""
    from gradexp.config.errors import ConfigError

    with pytest.raises(ConfigError, match=r"optimizer.momentum=0.0: .*nesterov"):
        train(make_config("optimizer=nesterov", "optimizer.momentum=0.0"), run_dir, show_progress=False)
    summary = read_summary(run_dir)
    assert summary["status"] == "failed" and summary["steps_completed"] == 0
    assert summary["error"].startswith("invalid config: optimizer.momentum=0.0")
    # no training curves: its event file holds only its HParams row
    assert set(read_scalars(run_dir)) == {"hparams/steps_completed"}


@pytest.mark.parametrize("model", ["mlp", "rnn"])
@pytest.mark.parametrize("task", ["blobs", "teacher", "adding"])
def test_every_model_trains_on_every_task(tmp_path, model, task):
    shrink = {"blobs": ["task.d_in=6"], "teacher": ["task.d_in=6"], "adding": ["task.seq_len=6"]}[task]
    size = ["model.hidden_size=8"] if model == "rnn" else ["model.width=8"]
    cfg = make_config(
        f"model={model}",
        f"task={task}",
        *shrink,
        *size,
        "trainer.steps=3",
        "task.n_train=64",
        "task.n_val=32",
        "trainer.batch_size=16",
        tiny=False,
    )
    summary = train(cfg, tmp_path, show_progress=False)
    assert summary["status"] == "completed"
    assert (summary["final_val_acc"] is not None) == (task == "blobs")


@pytest.mark.parametrize(
    "optimizer, factor",
    [
        ("sgd", 1 - 0.1 * 0.5),
        ("momentum", 1 - 0.1 * 0.5),
        ("nesterov", 1 - 0.1 * 0.5 * 1.9),
        ("adamw", 1 - 0.1 * 0.5),
    ],
)
def test_weight_decay_shrinks_weights_that_have_no_loss_gradient(optimizer, factor):
    """L2 weight decay adds weight_decay * w to the gradient (AdamW: decays w directly), so with a
    zero loss gradient one step multiplies w by 1 - lr * weight_decay (Nesterov's first step looks
    ahead by momentum * that gradient more)."""
    from gradexp.optim import OPTIMIZERS

    config = validate(make_config(f"optimizer={optimizer}", "optimizer.lr=0.1", "optimizer.weight_decay=0.5"))
    w = torch.nn.Parameter(torch.ones(3))
    w.grad = torch.zeros(3)
    OPTIMIZERS[optimizer]([w], config.optimizer).step()
    torch.testing.assert_close(w.detach(), torch.full((3,), factor))


def test_a_run_that_fails_while_being_set_up_still_writes_its_summary(run_dir, monkeypatch):
    from gradexp import engine

    def broken(*args):
        raise RuntimeError("simulated failure while building the model")

    monkeypatch.setattr(engine, "build_model", broken)
    with pytest.raises(RuntimeError, match="simulated"):
        train(make_config(), run_dir, show_progress=False)
    summary = read_summary(run_dir)
    assert summary["status"] == "failed" and "building the model" in summary["error"]
    assert summary["steps_completed"] == 0 and summary["layers"] == []


def test_event_file_records_carry_tensorboards_checksum(tmp_path):
    """The C checksum must equal TensorBoard's own, or its reader rejects the records."""
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

    from gradexp.sinks.event_file import EventFile, _masked_crc

    for data in (b"", b"gradexp", bytes(range(256)) * 7):
        assert _masked_crc(data) == struct.pack("<I", masked_crc32c(data))
    first, second = EventFile(tmp_path), EventFile(tmp_path)
    assert first.path != second.path  # two writers in one second keep two files
    for step in range(3):
        first.add(Event(step=step, summary=Summary(value=[Summary.Value(tag="x", simple_value=step)])))
    first.flush()  # readable before close, as a running job's file must be
    events = [Event.FromString(raw) for raw in RawEventFileLoader(str(first.path)).Load()]
    assert events[0].file_version == "brain.Event:2"
    assert [(e.step, e.summary.value[0].simple_value) for e in events[1:]] == [(0, 0.0), (1, 1.0), (2, 2.0)]


def test_deterministic_algorithms_are_set_by_every_run_and_never_carried_over(run_dir, tmp_path):
    train(make_config("trainer.deterministic=true"), run_dir, show_progress=False)
    assert torch.are_deterministic_algorithms_enabled()
    summary = train(make_config(), tmp_path / "next", show_progress=False)
    assert not torch.are_deterministic_algorithms_enabled()
    assert summary["provenance"]["deterministic"] is False
