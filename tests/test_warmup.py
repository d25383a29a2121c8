"""Learning-rate warmup (`scheduler.warmup_steps`), through the real engine and CLI: the lr every
step records in TensorBoard, step by step against the formula; a run resumed in the middle of
the warmup, or after it, records the lrs of the run never interrupted; and a warmup that is
negative or does not end before the run does is refused in one line."""

import math
import signal

import pytest
import torch

from gradexp import engine
from gradexp.config.schema import SchedulerConfig
from gradexp.engine import train
from gradexp.optim import SCHEDULERS, Warmup
from tests.conftest import logged_steps, make_config, read_scalars, read_summary, run_cli, run_in_process

STEPS, WARMUP, LR, ETA_MIN = 40, 10, 0.01, 0.001
RUN = [f"trainer.steps={STEPS}", f"optimizer.lr={LR}", f"scheduler.warmup_steps={WARMUP}"]  # log_every=1

# Each schedule at step t of its own clock, which starts when the warmup ends.
SCHEDULES = {
    "none": ([], lambda t: LR),
    "step": (["scheduler.step_size=7", "scheduler.gamma=0.5"], lambda t: LR * 0.5 ** (t // 7)),
    "exponential": (["scheduler.gamma=0.9"], lambda t: LR * 0.9**t),
    "cosine": (  # t_max=null: over the steps left after the warmup
        [f"scheduler.eta_min={ETA_MIN}"],
        lambda t: ETA_MIN + (LR - ETA_MIN) * (1 + math.cos(math.pi * t / (STEPS - WARMUP))) / 2,
    ),
}


def expected_lrs(scheduler: str) -> list[float]:
    """lr * s / W during the warmup (lr 0 at step 0), then the schedule at s - W."""
    schedule = SCHEDULES[scheduler][1]
    return [LR * s / WARMUP if s < WARMUP else schedule(s - WARMUP) for s in range(STEPS)]


def config(scheduler: str, *extra: str):
    return make_config(*RUN, f"scheduler={scheduler}", *SCHEDULES[scheduler][0], *extra)


def recorded_lrs(run_dir) -> list[float]:
    assert logged_steps(run_dir, "lr") == list(range(STEPS))  # every step, once
    lr = read_scalars(run_dir)["lr"]
    return [lr[s] for s in range(STEPS)]


@pytest.mark.parametrize("scheduler", sorted(SCHEDULES))
def test_warmup_ramps_linearly_from_zero_then_runs_the_schedule_on_its_own_clock(tmp_path, scheduler):
    summary = train(config(scheduler), tmp_path, show_progress=False)
    assert summary["status"] == "completed"
    lrs = recorded_lrs(tmp_path)
    assert lrs[0] == 0.0 and lrs[WARMUP] == pytest.approx(LR, rel=1e-6)
    assert lrs == pytest.approx(expected_lrs(scheduler), rel=1e-6, abs=1e-12)  # TensorBoard keeps float32
    if scheduler == "step":  # the first decay comes step_size steps after the warmup, not after step 0
        assert lrs[WARMUP + 6] == pytest.approx(LR) and lrs[WARMUP + 7] == pytest.approx(LR / 2)


def test_cosine_with_warmup_reaches_eta_min_at_the_end_of_the_run(tmp_path):
    """t_max=null anneals over trainer.steps - warmup_steps: at the run's last step the lr is one
    step short of eta_min, as it is for cosine without warmup."""
    train(config("cosine", "trainer.steps=41"), tmp_path, show_progress=False)
    lr = read_scalars(tmp_path)["lr"]
    t_max = 41 - WARMUP
    assert lr[40] == pytest.approx(ETA_MIN + (LR - ETA_MIN) * (1 + math.cos(math.pi * 30 / t_max)) / 2)
    assert lr[40] < ETA_MIN * 1.03


def test_no_warmup_is_the_plain_pytorch_schedule_as_before():
    """warmup_steps=0 builds the very scheduler it built before warmup existed (so the lrs and
    the checkpoints' scheduler state are as they were)."""
    kinds = {
        "none": "LambdaLR",
        "step": "StepLR",
        "exponential": "ExponentialLR",
        "cosine": "CosineAnnealingLR",
    }
    for name, kind in kinds.items():
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)
        plain = SCHEDULERS[name](optimizer, SchedulerConfig(name=name), STEPS)
        assert type(plain).__name__ == kind and not isinstance(plain, Warmup)
        assert plain.get_last_lr() == [LR]


def stop_after(monkeypatch, last: int) -> None:
    """Ctrl-C, for real, right after step `last`: the run checkpoints and stops there."""
    real = engine.train_step

    def step_then_ctrl_c(run, step):
        went_on = real(run, step)
        if step == last:
            signal.raise_signal(signal.SIGINT)
        return went_on

    monkeypatch.setattr(engine, "train_step", step_then_ctrl_c)


@pytest.mark.parametrize(
    "scheduler, last",
    [("cosine", 3), ("step", WARMUP - 1), ("cosine", WARMUP + 5)],
    ids=["mid-warmup", "at-the-warmup's-end", "after-the-warmup"],
)
def test_a_run_resumed_mid_warmup_or_after_records_the_lrs_of_the_run_never_interrupted(
    tmp_path, monkeypatch, scheduler, last
):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    train(config(scheduler), whole, show_progress=False)
    stop_after(monkeypatch, last)
    with pytest.raises(KeyboardInterrupt):
        train(config(scheduler), cut, show_progress=False)
    monkeypatch.undo()
    stopped = read_summary(cut)
    assert stopped["status"] == "interrupted" and stopped["steps_completed"] == last + 1
    assert (cut / "checkpoint.pt").is_file()
    assert (
        train(config(scheduler, f"trainer.resume={cut}"), cut, show_progress=False)["status"] == "completed"
    )
    assert recorded_lrs(cut) == recorded_lrs(whole)  # float for float
    assert recorded_lrs(cut) == pytest.approx(expected_lrs(scheduler), rel=1e-6, abs=1e-12)
    assert read_scalars(cut) == read_scalars(whole)  # and every other number with them


@pytest.mark.parametrize(
    "args, shown, allowed",
    [
        (["scheduler.warmup_steps=-1"], "scheduler.warmup_steps=-1: out of range", "an integer >= 0"),
        (
            ["trainer.steps=20", "scheduler.warmup_steps=20"],
            "scheduler.warmup_steps=20: out of range",
            "an integer < trainer.steps (20)",
        ),
        (
            ["scheduler=cosine", "trainer.steps=20", "scheduler.warmup_steps=500"],
            "scheduler.warmup_steps=500: out of range",
            "an integer < trainer.steps (20)",
        ),
        (
            ["scheduler=step", "scheduler.warmup_steps=2.5"],
            "scheduler.warmup_steps=2.5: wrong type",
            "an integer",
        ),
    ],
)
def test_a_warmup_that_is_negative_or_outlasts_the_run_is_refused_in_one_line(
    tmp_path, monkeypatch, capsys, args, shown, allowed
):
    result = run_in_process(*args, cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert shown in lines[0] and allowed in lines[0], lines[0]
    assert list(tmp_path.iterdir()) == []  # refused before anything was written


def test_the_refusal_in_a_process_of_its_own_is_one_line_and_exit_status_2(tmp_path):
    result = run_cli("trainer.steps=20", "scheduler.warmup_steps=20", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == (
        "gradexp: error: scheduler.warmup_steps=20: out of range; allowed: "
        "an integer < trainer.steps (20), so that the warmup ends before the run does\n"
    )
    assert not (tmp_path / "outputs").exists()
