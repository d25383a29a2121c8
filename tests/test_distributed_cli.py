"""gradexp's own CLI on two processes, `torchrun --nproc_per_node=2 -m gradexp`, with the gloo
backend on the CPU: one run, trained on the two processes' shares of each batch, whose records
are those of one process on the whole batch; rank 0 alone writes; a signal stops both at the
same step, and the run resumes from its checkpoint."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import TINY, read_scalars

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
# gradient accumulation (DDP's no_sync on the first micro-batch) and clipping (every process
# clips by the same synchronized norm) are both on the path being compared
RUN = [*TINY, "trainer.grad_accum=2", "trainer.clip.max_norm=0.5", "diagnostics.every=5"]


def gradexp(*args: str, cwd: Path, processes: int = 2) -> subprocess.CompletedProcess:
    launcher = [*TORCHRUN[:-1], f"--nproc_per_node={processes}", "-m", "gradexp"]
    return subprocess.run([*launcher, *args], cwd=cwd, capture_output=True, text=True, env=ENV, timeout=300)


def files(run_dir: Path) -> list[str]:
    """The names of a run directory's files, with each training event file as "training events"
    (its name holds the time and the process id)."""
    names = (p.name for p in run_dir.iterdir())
    return sorted("training events" if n.startswith("events.out.tfevents.1") else n for n in names)


def test_two_processes_record_what_one_process_records_on_the_whole_batch(tmp_path):
    one = subprocess.run(
        [sys.executable, "-m", "gradexp", *RUN, "hydra.run.dir=one"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=ENV,
    )
    assert one.returncode == 0, one.stderr
    two = gradexp(*RUN, "hydra.run.dir=two", cwd=tmp_path)
    assert two.returncode == 0, two.stderr
    assert two.stdout.count("status: completed") == 1  # rank 0 alone reports
    single, both = read_scalars(tmp_path / "one"), read_scalars(tmp_path / "two")
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["processes"] == 2
    assert summary["provenance"]["rerun"].startswith("torchrun --nproc_per_node=2 -m gradexp ")
    layers = summary["layers"]
    compared = [f"grad_norm/{name}" for name in layers] + [f"update_ratio/{name}" for name in layers]
    compared += ["grad_norm/total", "grad_norm/total_clipped", "loss/train", "loss/val", "acc/val"]
    for tag in compared:
        assert list(both[tag]) == list(single[tag]), tag
        assert list(both[tag].values()) == pytest.approx(list(single[tag].values()), rel=1e-4), tag
    assert summary["final_val_loss"] == pytest.approx(
        json.loads((tmp_path / "one" / "summary.json").read_text())["final_val_loss"], rel=1e-4
    )
    # the same files as one process writes, with one event file of training: rank 0's
    assert files(tmp_path / "two") == files(tmp_path / "one")
    assert files(tmp_path / "two").count("training events") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]  # no directory of rank 1's


def test_a_signal_stops_both_processes_at_one_step_and_the_run_resumes(tmp_path):
    steps = 5000
    args = [*TINY, f"trainer.steps={steps}", "trainer.log_every=100", "hydra.run.dir=run"]
    process = subprocess.Popen(
        [*TORCHRUN, "-m", "gradexp", *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob("run/events.out.tfevents.*[0-9]")) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.5)
    process.send_signal(signal.SIGTERM)  # a cluster's pre-emption: torchrun passes it on to both
    _, stderr = process.communicate(timeout=120)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "interrupted", stderr
    assert 0 < summary["steps_completed"] < steps
    assert (tmp_path / "run" / "checkpoint.pt").is_file()
    assert stderr.count("gradexp: interrupted (SIGTERM)") == 1  # rank 0 says it, once

    resumed = gradexp("trainer.resume=run", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps_completed"] == steps
    logged = list(read_scalars(tmp_path / "run")["grad_norm/total"])
    assert logged == [*range(0, steps, 100), steps - 1]  # every logged step once, across the stop


def test_a_mistake_is_one_line_from_rank_0_and_a_sweep_is_refused(tmp_path):
    odd = gradexp(*TINY, "trainer.batch_size=33", "hydra.run.dir=odd", cwd=tmp_path)
    assert odd.returncode != 0
    errors = [line for line in odd.stderr.splitlines() if line.startswith("gradexp: error:")]
    assert errors == [
        "gradexp: error: trainer.batch_size=33: each of the 2 processes takes an equal share of a batch; "
        "allowed: a multiple of 2"
    ]
    assert json.loads((tmp_path / "odd" / "summary.json").read_text())["status"] == "failed"
    sweep = gradexp("-m", "activation=tanh,relu", cwd=tmp_path)
    assert sweep.returncode != 0
    assert [line for line in sweep.stderr.splitlines() if line.startswith("gradexp: error:")] == [
        "gradexp: error: --multirun: torchrun's 2 processes train one run together; "
        "allowed: a single run under torchrun, or the sweep without torchrun"
    ]
    assert not (tmp_path / "outputs").exists()
