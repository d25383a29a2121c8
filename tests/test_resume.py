"""Interrupt a run for real, resume it, and get the run that was never interrupted, number for
number; refuse, in one line, what cannot be resumed."""

import random

import torch

from tests.conftest import interrupt_once_training, logged_steps, read_scalars, read_summary, run_cli

STEPS = 1500  # long enough that the signal always comes before the end
RUN = [
    f"trainer.steps={STEPS}",
    "trainer.log_every=1",
    "trainer.checkpoint_every=40",
    "model.width=32",
    "model.dropout=0.1",  # the global random state matters too
    "task.n_train=1024",
    "task.n_val=256",
    "diagnostics.every=7",
    "diagnostics.histograms_every=50",
    "trainer.clip.max_norm=1.0",
]
NOT_COMPARED = ("wall_time_s", "provenance", "config", "overrides")


def test_an_interrupted_run_resumed_equals_the_run_never_interrupted(tmp_path):
    assert run_cli(*RUN, "hydra.run.dir=whole", cwd=tmp_path).returncode == 0
    stopped = interrupt_once_training(
        [*RUN, "hydra.run.dir=cut"],
        tmp_path,
        started="cut/events.out.tfevents.*",
        wait=random.uniform(0.3, 2.0),  # a random step
    )
    assert stopped.returncode == 130, stopped.stderr
    cut_at = read_summary(tmp_path / "cut")["steps_completed"]
    assert read_summary(tmp_path / "cut")["status"] == "interrupted" and cut_at < STEPS
    resumed = run_cli("trainer.resume=cut", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    whole, cut = read_summary(tmp_path / "whole"), read_summary(tmp_path / "cut")
    assert {k: v for k, v in cut.items() if k not in NOT_COMPARED} == {
        k: v for k, v in whole.items() if k not in NOT_COMPARED
    }
    # TensorBoard shows every step once, with the values of the uninterrupted run
    assert read_scalars(tmp_path / "cut") == read_scalars(tmp_path / "whole")
    assert logged_steps(tmp_path / "cut", "loss/train") == list(range(STEPS))


def test_what_cannot_be_resumed_is_refused_in_one_line(tmp_path):
    assert (
        run_cli(*RUN, "trainer.steps=40", "hydra.run.dir=done", cwd=tmp_path).returncode == 0
    )  # checkpoint at 40
    cases = {
        "nowhere": ("trainer.resume=nowhere", "not a gradexp run directory"),
        "other config": ("trainer.resume=done", "its checkpoint is of another config (model.width differs)"),
    }
    for name, (arg, expected) in cases.items():
        extra = ["model.width=64"] if name == "other config" else []
        result = run_cli(arg, *extra, cwd=tmp_path)
        assert result.returncode == 2 and result.stderr.count("\n") == 1, (name, result.stderr)
        assert expected in result.stderr, (name, result.stderr)
    foreign = tmp_path / "done" / "checkpoint.pt"
    torch.save({"model": {"weight": torch.zeros(3)}}, foreign)  # a checkpoint from elsewhere
    result = run_cli("trainer.resume=done", cwd=tmp_path)
    assert (
        result.returncode == 2
        and "not a gradexp checkpoint" in result.stderr
        and "Traceback" not in result.stderr
    )
    foreign.write_bytes(b"\x80\x04c__builtin__\nexec\n.")  # a pickle that would run code
    result = run_cli("trainer.resume=done", cwd=tmp_path)
    assert (
        result.returncode == 2
        and "not a readable checkpoint" in result.stderr
        and "Traceback" not in result.stderr
    )
