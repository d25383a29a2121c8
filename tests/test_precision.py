"""Mixed precision for real, on the CPU: float16 without a loss scale loses small gradients to
underflow (grad_zero), a loss scale keeps them, an overflow of the scaled backward is a skipped
step and never a divergence, and an fp16 run resumes with its scaler's state, number for number."""

import math
import random
import shutil
from pathlib import Path

import pytest
import torch

from gradexp.config.validate import validate
from gradexp.engine import build_run, train
from gradexp.outcome import _precision_summary
from gradexp.precision import precision_problem
from tests.conftest import (
    logged_steps,
    make_config,
    read_scalars,
    read_summary,
    run_cli,
    whole_and_resumed,
)

# 12 sigmoid layers: the weight gradient reaches 5e-8 at layer 1, below float16's 2^-24
UNDERFLOW = [
    "model.depth=12",
    "model.width=64",
    "activation=sigmoid",
    "init=xavier_uniform",
    "trainer.steps=1",
]
# gradients of order 1 to 10: times 65536 they overflow float16 until the scale has come down
LARGE_GRADIENTS = ["init=normal", "init.std=0.5", "model.width=32", "task.n_train=1024"]


def probe(tmp_path, *overrides) -> dict:
    return train(make_config(*overrides), tmp_path, show_progress=False)


def test_fp16_without_a_loss_scale_zeroes_the_small_gradients_that_a_scale_keeps(tmp_path):
    runs = {
        name: probe(tmp_path / name, *UNDERFLOW, *extra)
        for name, extra in {
            "float32": [],
            "fp16 unscaled": ["trainer.precision=fp16", "trainer.loss_scale=none"],
            "fp16 dynamic": ["trainer.precision=fp16"],  # the default scale for fp16
        }.items()
    }
    zero = {name: list(s["grad_zero_first"].values()) for name, s in runs.items()}
    assert zero["fp16 unscaled"][:3] == [1.0] * 3  # the first layers' gradients lost entirely
    assert max(zero["fp16 dynamic"]) < 1e-3
    assert zero["float32"] == [] and "underflow" in runs["float32"]["not_measured"]["GradZero"]
    assert sum(zero["fp16 unscaled"]) > 3.5
    first = runs["float32"]["layers"][0]
    assert runs["fp16 unscaled"]["grad_norm_first"][first] == 0.0
    scaled, exact = runs["fp16 dynamic"]["grad_norm_first"][first], runs["float32"]["grad_norm_first"][first]
    assert scaled == pytest.approx(exact, rel=0.05)  # unscaled: the true gradient, as float16 rounds it
    assert (
        runs["fp16 dynamic"]["loss_scale"] == "dynamic" and runs["fp16 unscaled"]["amp_skipped_steps"] is None
    )


def test_bf16_trains_under_autocast_close_to_float32(tmp_path):
    full = probe(tmp_path / "32", "trainer.steps=30")
    bf16 = probe(tmp_path / "bf16", "trainer.steps=30", "trainer.precision=bf16")
    assert bf16["status"] == "completed" and bf16["precision"] == "bf16" and bf16["loss_scale"] == "none"
    assert bf16["final_train_loss"] != full["final_train_loss"]  # autocast really ran in bfloat16
    assert bf16["final_train_loss"] == pytest.approx(full["final_train_loss"], rel=0.1)


def test_an_overflow_of_the_scaled_backward_is_a_skipped_step_not_a_divergence(tmp_path):
    s = probe(tmp_path, *LARGE_GRADIENTS, "trainer.precision=fp16", "trainer.steps=40", "diagnostics.every=1")
    assert s["status"] == "completed" and s["diverged_step"] is None
    assert 1 <= s["amp_skipped_steps"] < 40 and s["amp_scale_last"] < 65536
    assert s["amp_scale_collapsed"] is False
    scalars = read_scalars(tmp_path)
    skipped = scalars["amp/skipped"]
    first_skip = min(step for step, count in skipped.items() if count >= 1)
    gradient_tags = [t for t in scalars if t.split("/")[0] in ("grad_norm", "grad_signal", "grad_zero")]
    assert len(gradient_tags) > 5 and all(first_skip not in scalars[t] for t in gradient_tags)
    assert first_skip in scalars["loss/train"] and math.isfinite(scalars["loss/train"][first_skip])
    assert scalars["amp/scale"][0] == 65536 and min(scalars["amp/scale"].values()) == s["amp_scale_last"]
    assert all(math.isfinite(v) for series in scalars.values() for v in series.values())


def test_a_fixed_scale_that_always_overflows_skips_every_step_and_is_reported(tmp_path):
    s = probe(tmp_path, "trainer.precision=fp16", "trainer.loss_scale=1e30", "trainer.steps=10")
    assert s["status"] == "completed" and s["amp_skipped_steps"] == 10
    assert s["amp_skipped_in_a_row_at_end"] == 10 and s["amp_scale_last"] == pytest.approx(1e30, rel=1e-7)
    assert s["amp_scale_collapsed"] is False  # a fixed scale is never adjusted: nothing collapsed
    assert s["initial_val_loss"] == pytest.approx(s["final_val_loss"])  # no step was applied
    assert s["grad_norm_last"] == {}  # no step had a measurable gradient


def test_a_non_finite_loss_is_a_divergence_even_under_a_loss_scale(tmp_path):
    """The scale guards the backward pass; a forward pass that overflows float16 is no skip."""
    s = probe(
        tmp_path, "init=normal", "init.std=1.0", "model.width=32", "model.depth=8", "trainer.precision=fp16"
    )
    assert s["status"] == "diverged" and s["diverged_step"] == 0 and s["amp_skipped_steps"] == 0


def test_a_scale_below_one_that_keeps_skipping_is_reported_as_collapsed(tmp_path):
    """Every gradient non-finite at a scale that has fallen below 1: what a scaler does when
    float16 overflows whatever the scale. The run is real; its gradients are set by hand."""
    run = build_run(validate(make_config("trainer.precision=fp16")), tmp_path, False, 0.0, None)
    run.precision.scale(torch.tensor(1.0))  # the scaler's state starts at its first use
    run.precision.scaler.update(0.25)
    for step in range(3):
        for p in run.model.parameters():
            p.grad = torch.full_like(p, math.inf)
        run.recorder.measure()
        run.recorder.record_step(step, torch.tensor(1.0), 0.1, None, run.precision.current_scale())
    run.recorder.flush()
    assert run.recorder.divergence is None
    summary = _precision_summary(run.recorder, run.precision.name, run.precision.loss_scale)
    assert summary["amp_scale_collapsed"] is True and summary["amp_skipped_in_a_row_at_end"] == 3


def test_an_interrupted_fp16_run_resumes_with_its_scalers_state_number_for_number(tmp_path):
    """The scale has come down from 65536 before the checkpoint; resumed at 65536 instead, the
    run would skip steps the uninterrupted run did not."""
    # 1200 steps (about 4 ms each on one thread): still training when Ctrl-C comes, a second in
    args = [*LARGE_GRADIENTS, "trainer.precision=fp16", "trainer.steps=1200", "trainer.log_every=1"]
    args += ["trainer.checkpoint_every=20", "diagnostics.every=25", "task.n_val=256"]
    whole, cut = whole_and_resumed(args, tmp_path, wait=random.uniform(0.3, 1.0))
    assert whole["amp_skipped_steps"] >= 1
    for key in (
        "amp_skipped_steps",
        "amp_scale_last",
        "final_train_loss",
        "final_val_loss",
        "grad_norm_last",
    ):
        assert cut[key] == whole[key], key
    assert read_scalars(tmp_path / "cut") == read_scalars(tmp_path / "whole")
    assert logged_steps(tmp_path / "cut", "amp/scale") == list(range(1200))


def test_grad_zero_is_recorded_where_float16_computes_the_gradient_and_said_why_not_elsewhere(tmp_path):
    """fp16 autocast, or float16 weights at any precision; not float32 or bfloat16 (float32's
    exponent range: an exact zero there is a dead unit, which `dead` shows)."""
    shutil.copy(Path(__file__).parent / "networks.py", tmp_path)
    one_step = ["trainer.steps=1", "diagnostics.every=1", "diagnostics.figures=false"]
    half = run_cli(
        "model=custom", "model._target_=networks.HalfInside", "init=default", *one_step, cwd=tmp_path
    )
    assert half.returncode == 0, half.stderr
    summary = read_summary(next(tmp_path.glob("outputs/**/summary.json")).parent)
    assert summary["precision"] == "32" and len(summary["grad_zero_first"]) == len(summary["layers"]) == 5
    for precision in ("32", "bf16"):
        s = probe(tmp_path / precision, *UNDERFLOW, f"trainer.precision={precision}", "diagnostics.every=1")
        assert s["grad_zero_first"] == {} and "dead unit" in s["not_measured"]["GradZero"]


def test_a_loss_scale_on_a_float16_model_is_refused_in_one_line(tmp_path):
    """GradScaler unscales float32 gradients only; the same model trains without a scale."""
    shutil.copy(Path(__file__).parent / "networks.py", tmp_path)  # importable from the run's directory
    result = run_cli(
        "model=custom", "model._target_=networks.half_stack", "trainer.precision=fp16", cwd=tmp_path
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "trainer.loss_scale=dynamic: the model's parameters are float16" in result.stderr
    assert result.stderr.rstrip().endswith("allowed: none")


def test_a_precision_the_device_cannot_do_is_refused_in_one_line(tmp_path):
    """torch's own answer, asked of a device it knows but cannot autocast on."""
    key, why, allowed = precision_problem("bf16", None, torch.device("meta"))
    assert key == "trainer.precision" and "cannot autocast" in why and allowed == "32"
    assert precision_problem("32", None, torch.device("meta")) is None
    result = run_cli("trainer.precision=fp8", "trainer.steps=1", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "trainer.precision=fp8: no such choice; allowed: 32, bf16, fp16" in result.stderr


def test_the_fp16_underflow_preset_sweeps_and_draws_the_zero_share_per_layer(tmp_path):
    """The preset's four jobs, cut to a few steps: its table says how many steps each scale
    skipped, and the zero share figure is drawn (the unscaled float16 job has zeros)."""
    result = run_cli(
        "-m",
        "experiment=fp16_underflow",
        "trainer.steps=3",
        "hydra.sweep.dir=sweep",
        cwd=tmp_path,
        module=False,
    )
    assert result.returncode == 0, result.stderr
    assert "steps skipped (loss scale)" in result.stdout
    assert (tmp_path / "sweep" / "report" / "grad_zero_vs_depth.png").is_file()
    unscaled = read_summary(next((tmp_path / "sweep").glob("*loss_scale=none,trainer.precision=fp16")))
    assert unscaled["grad_zero_first"][unscaled["layers"][0]] == 1.0
