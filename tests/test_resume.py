"""Interrupt a run for real, resume it, and get the run that was never interrupted, number for
number; refuse, in one line, what cannot be resumed."""

import random
import shutil
from pathlib import Path

import pytest
import torch

from tests.conftest import interrupt_once_training, logged_steps, read_scalars, read_summary, run_cli

STEPS = 600  # long enough that the signal (at most a second after the first events) comes first
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


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under `directory`, byte for byte."""
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory) -> Path:
    """A run stopped by Ctrl-C at a random step, with its checkpoint, and the same run never
    interrupted beside it ("whole"): made once, copied by the tests that change it."""
    root = tmp_path_factory.mktemp("resume")
    assert run_cli(*RUN, "hydra.run.dir=whole", cwd=root).returncode == 0
    stopped = interrupt_once_training(
        [*RUN, "hydra.run.dir=cut"],
        root,
        started="cut/events.out.tfevents.*",
        wait=random.uniform(0.1, 0.8),  # a random step, well before the end
    )
    assert stopped.returncode == 130, stopped.stderr
    summary = read_summary(root / "cut")
    assert summary["status"] == "interrupted" and summary["steps_completed"] < STEPS
    assert (root / "cut" / "checkpoint.pt").is_file()
    return root


def test_an_interrupted_run_resumed_equals_the_run_never_interrupted(interrupted, tmp_path):
    shutil.copytree(interrupted / "cut", tmp_path / "cut")
    resumed = run_cli("trainer.resume=cut", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    whole, cut = read_summary(interrupted / "whole"), read_summary(tmp_path / "cut")
    assert {k: v for k, v in cut.items() if k not in NOT_COMPARED} == {
        k: v for k, v in whole.items() if k not in NOT_COMPARED
    }
    assert cut["provenance"]["command"] == "gradexp trainer.resume=cut"  # as typed, not as rewritten
    assert "resume" not in cut["provenance"]["rerun"]  # the run from the start, which it equals
    assert cut["provenance"]["rerun"] == whole["provenance"]["rerun"]
    # TensorBoard shows every step once, with the values of the uninterrupted run
    assert read_scalars(tmp_path / "cut") == read_scalars(interrupted / "whole")
    assert logged_steps(tmp_path / "cut", "loss/train") == list(range(STEPS))


def test_a_refused_resume_leaves_the_run_exactly_as_it_was(interrupted):
    """Refused before anything in the directory is written, in one line: the run can still be
    resumed with the right command afterwards."""
    before = snapshot(interrupted / "cut")
    cases = {
        "model.width=64": "its checkpoint is of another config (model.width differs)",
        "model.depth=3": "its checkpoint is of another config (model.depth differs)",
        "hydra.run.dir=elsewhere": "hydra.run.dir=elsewhere: a resume goes on in the run's own directory",
    }
    for extra, expected in cases.items():
        result = run_cli("trainer.resume=cut", extra, cwd=interrupted)
        assert result.returncode == 2 and result.stderr.count("\n") == 1, (extra, result.stderr)
        assert expected in result.stderr and not result.stdout, (extra, result.stderr)
        assert snapshot(interrupted / "cut") == before, extra
    assert not (interrupted / "elsewhere").exists()


def test_a_completed_run_is_not_resumed_and_stays_as_it_was(tmp_path):
    assert run_cli(*RUN, "trainer.steps=40", "hydra.run.dir=done", cwd=tmp_path).returncode == 0
    before = snapshot(tmp_path / "done")
    result = run_cli("trainer.resume=done", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "the run has completed" in result.stderr and "nothing to resume" in result.stderr
    assert snapshot(tmp_path / "done") == before


def test_what_cannot_be_resumed_is_refused_in_one_line(tmp_path):
    result = run_cli("trainer.resume=nowhere", cwd=tmp_path)
    assert result.returncode == 2 and "not a gradexp run directory" in result.stderr
    (tmp_path / "run" / ".hydra").mkdir(parents=True)
    (tmp_path / "run" / ".hydra" / "overrides.yaml").write_text("- trainer.steps=40\n")
    foreign = tmp_path / "run" / "checkpoint.pt"
    torch.save({"model": {"weight": torch.zeros(3)}}, foreign)  # a checkpoint from elsewhere
    result = run_cli("trainer.resume=run", cwd=tmp_path)
    assert (
        result.returncode == 2
        and "not a gradexp checkpoint" in result.stderr
        and "Traceback" not in result.stderr
    )
    foreign.write_bytes(b"\x80\x04c__builtin__\nexec\n.")  # a pickle that would run code
    result = run_cli("trainer.resume=run", cwd=tmp_path)
    assert (
        result.returncode == 2
        and "not a readable checkpoint" in result.stderr
        and "Traceback" not in result.stderr
    )
