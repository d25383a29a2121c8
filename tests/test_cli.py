"""The `gradexp` command as a user runs it: in a subprocess, reading back the files it writes."""

import math
import signal

import pytest
import torch

from tests.conftest import TINY, TINY_RNN, interrupt_once_training, read_scalars, read_summary, run_cli


def test_default_experiment_writes_events_summary_and_says_where(tmp_path):
    result = run_cli("trainer.steps=30", cwd=tmp_path, module=False)
    assert result.returncode == 0, result.stderr
    [run_dir] = list((tmp_path / "outputs" / "runs").glob("*/*"))
    assert f"tensorboard --logdir {run_dir.relative_to(tmp_path)}" in result.stdout
    assert str(run_dir.relative_to(tmp_path)) in result.stdout and "completed" in result.stdout
    summary = read_summary(run_dir)
    assert summary["status"] == "completed" and summary["config"]["activation"]["name"] == "relu"
    scalars = read_scalars(run_dir)
    assert {"loss/train", "loss/val", "acc/val", "lr", "grad_norm/total"} <= set(scalars)
    assert {f"grad_norm/{layer}" for layer in summary["layers"]} <= set(scalars)
    assert all(0 in scalars[f"grad_norm/{layer}"] for layer in summary["layers"])
    assert (run_dir / ".hydra" / "config.yaml").is_file() and (run_dir / "gradexp.log").is_file()


def test_deep_sigmoid_example_from_the_readme_shows_vanishing(tmp_path):
    result = run_cli(
        "model.depth=30",
        "activation=sigmoid",
        "init=xavier_uniform",
        "norm=none",
        "optimizer=sgd",
        "optimizer.lr=0.1",
        "trainer.steps=2",
        "hydra.run.dir=run",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    summary = read_summary(tmp_path / "run")
    first = summary["grad_norm_first"]
    assert len(summary["layers"]) == 31 and first["001_hidden"] < 1e-10 * first["030_hidden"]
    assert "001_hidden" in result.stdout  # the per-layer table


def test_rnn_example_records_input_and_recurrent_matrices_and_clipping(tmp_path):
    result = run_cli(
        *TINY_RNN,
        "model.cell=rnn_tanh",
        "task.seq_len=100",
        "trainer.clip.max_norm=1.0",
        "hydra.run.dir=run",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    scalars = read_scalars(tmp_path / "run")
    assert {
        "grad_norm/001_rnn1_ih",
        "grad_norm/002_rnn1_hh",
        "grad_norm/003_output",
        "grad_norm/total_clipped",
    } <= set(scalars)
    assert max(scalars["grad_norm/total_clipped"].values()) <= 1.0 + 1e-5
    assert "acc/val" not in scalars


def test_divergence_exits_zero_with_status_diverged(tmp_path):
    result = run_cli(
        *TINY,
        "init=normal",
        "init.std=50.0",
        "activation=identity",
        "model.depth=8",
        "optimizer=sgd",
        "optimizer.lr=1.0",
        "hydra.run.dir=run",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    summary = read_summary(tmp_path / "run")
    assert summary["status"] == "diverged" and summary["first_nonfinite_layer"] in summary["layers"]
    assert "diverged" in result.stdout
    assert not math.isfinite(read_scalars(tmp_path / "run")["grad_norm/total"][summary["diverged_step"]])


def test_help_lists_every_group_and_its_choices(tmp_path):
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0
    expected = {
        "activation": "elu, gelu, identity, leaky_relu, relu, selu, sigmoid, softsign, tanh",
        "init": "constant, default, kaiming_normal, kaiming_uniform, normal, orthogonal, uniform, "
        "xavier_normal, xavier_uniform",
        "model": "mlp, rnn",
        "norm": "batchnorm, layernorm, none",
        "optimizer": "adagrad, adam, adamw, momentum, nesterov, rmsprop, sgd",
        "scheduler": "cosine, exponential, none, step",
        "task": "adding, blobs, teacher",
    }
    for group, choices in expected.items():
        assert f"{group}: {choices}" in result.stdout


def test_cfg_job_prints_the_composed_config_without_training(tmp_path):
    result = run_cli("--cfg", "job", "model=rnn", "model.cell=gru", cwd=tmp_path)
    assert result.returncode == 0
    assert "cell: gru" in result.stdout and "trainer:" in result.stdout
    assert not (tmp_path / "outputs").exists()


BAD_INPUT = [
    (["activation=sigmoidd"], "activation=sigmoidd", "sigmoid, softsign, tanh"),
    (["model.depth=0"], "model.depth=0", ">= 1"),
    (["optimizer.lr=-1"], "optimizer.lr=-1", "> 0"),
    (["model.depth=abc"], "model.depth=abc", "an integer"),
    (["model.dept=3"], "model.dept", "depth"),
    (["model=rnn", "norm=batchnorm"], "norm=batchnorm", "none"),
    (["model=rnn", "activation=tanh"], "activation=tanh", "model.cell"),
    (["trainer.device=tpu"], "trainer.device=tpu", "cuda:N"),
    (["-m", "model.depth=3,-2"], "model.depth=-2", ">= 1"),
    (["model.depth=3,4"], "model.depth=3,4", "add -m"),
    (["optimizer.lr=${oops}"], "optimizer.lr=${oops}", "a number"),
]


@pytest.mark.parametrize("args, names, allowed", BAD_INPUT, ids=[" ".join(a) for a, _, _ in BAD_INPUT])
def test_bad_input_is_one_line_naming_key_value_and_allowed(tmp_path, args, names, allowed):
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert names in lines[0] and allowed in lines[0]
    assert not (tmp_path / "outputs").exists()  # stopped before anything ran


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_asking_for_cuda_without_it_is_a_config_error(tmp_path):
    result = run_cli("trainer.device=cuda", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "gradexp: error: trainer.device=cuda: CUDA is not available on this machine; allowed: auto, cpu"
    )


def test_ctrl_c_leaves_a_readable_run_and_no_traceback(tmp_path):
    args = ["trainer.steps=1000000", "hydra.run.dir=run"]
    result = interrupt_once_training(args, tmp_path, started="run/events.out.tfevents.*")
    assert result.returncode == 130
    assert "Traceback" not in result.stderr and "interrupted" in result.stderr
    summary = read_summary(tmp_path / "run")
    assert summary["status"] == "interrupted" and summary["steps_completed"] >= 1
    assert 0 in read_scalars(tmp_path / "run")["loss/train"]


def test_sigterm_stops_at_the_end_of_a_step_with_every_step_recorded(tmp_path):
    """A cluster's pre-emption: the step in flight finishes and is recorded, then the run ends."""
    args = [*TINY, "trainer.steps=1000000", "trainer.log_every=1", "hydra.run.dir=run"]
    result = interrupt_once_training(
        args, tmp_path, started="run/events.out.tfevents.*", signals=(signal.SIGTERM,)
    )
    assert result.returncode == 143  # 128 + SIGTERM
    assert "Traceback" not in result.stderr and "interrupted (SIGTERM)" in result.stderr
    summary = read_summary(tmp_path / "run")
    assert summary["status"] == "interrupted" and summary["steps_completed"] >= 1
    assert max(read_scalars(tmp_path / "run")["loss/train"]) == summary["steps_completed"] - 1


def test_a_second_ctrl_c_stops_at_once_and_still_leaves_the_summary(tmp_path):
    args = ["trainer.steps=1000000", "hydra.run.dir=run"]
    signals = (signal.SIGINT, signal.SIGINT)
    result = interrupt_once_training(args, tmp_path, started="run/events.out.tfevents.*", signals=signals)
    assert result.returncode == 130 and "Traceback" not in result.stderr
    assert read_summary(tmp_path / "run")["status"] == "interrupted"


def test_an_output_directory_that_cannot_be_created_is_one_line_before_anything_runs(tmp_path):
    (tmp_path / "taken").write_text("a file, not a directory")
    for args in (["hydra.run.dir=taken/run"], ["-m", "hydra.sweep.dir=taken/sweep", "model.depth=2,3"]):
        result = run_cli(*args, cwd=tmp_path)
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
        assert "dir=taken/" in result.stderr and "taken is a file" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # nothing created, nothing overwritten
