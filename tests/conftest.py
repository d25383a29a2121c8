"""Shared helpers: compose the real config, run the real CLI, read real TensorBoard files."""

import os

# One torch thread per test process (set before torch is imported, and inherited by every CLI
# run a test starts): pytest-xdist runs a worker per core, and workers of two threads each
# oversubscribe the cores, where OpenMP's waiting threads doubled the suite's time on 2 cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import json  # noqa: E402
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from gradexp import cli
from gradexp.config import CONFIG_DIR
from gradexp.config.validate import validate
from gradexp.engine import Batches
from gradexp.models import build_model
from gradexp.provenance import COMMAND_ENV
from gradexp.tasks import build_task

# Small enough that a run takes a fraction of a second on 2 cores.
TINY = [
    "trainer.steps=20",
    "trainer.batch_size=32",
    "task.n_train=256",
    "task.n_val=128",
    "trainer.log_every=1",
    "trainer.eval_every=10",
    "model.width=16",
    "model.depth=3",
]
TINY_RNN = [
    "model=rnn",
    "task=adding",
    "task.seq_len=10",
    "model.hidden_size=16",
    "trainer.steps=20",
    "trainer.batch_size=32",
    "task.n_train=256",
    "task.n_val=128",
    "trainer.log_every=1",
]


def make_config(*overrides: str, tiny: bool = True):
    """The real composed config, shrunk unless `tiny` is False; later overrides win."""
    base = (TINY_RNN if "model=rnn" in overrides else TINY) if tiny else []
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("config", overrides=[*base, *overrides])


def run_cli(*args: str, cwd: Path, module: bool = True) -> subprocess.CompletedProcess:
    """Run gradexp in a subprocess, as a user would; `module` picks `python -m gradexp` over the
    installed `gradexp` script."""
    command = [sys.executable, "-m", "gradexp"] if module else [str(Path(sys.executable).parent / "gradexp")]
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([*command, *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


def run_in_process(*args: str, cwd: Path, monkeypatch, capsys) -> subprocess.CompletedProcess:
    """The real `gradexp` entry point, called in this process: for command lines refused before
    Hydra runs, which need no process of their own to prove it (a tenth of the time)."""
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", ["gradexp", *args])
    monkeypatch.setenv(COMMAND_ENV, "")  # restored afterwards: main() sets it
    capsys.readouterr()
    try:
        cli.main()
        code = 0
    except SystemExit as stopped:
        code = stopped.code if isinstance(stopped.code, int) else 1
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["gradexp", *args], code, out, err)


def start_gradexp(
    args: list[str], cwd: Path, started: str, env: dict | None = None, timeout: float = 120, poll: float = 0.2
) -> subprocess.Popen:
    """Start gradexp in the background and return it once a file matching the glob `started`
    appears under `cwd` (training has begun), or after `timeout` seconds."""
    process = subprocess.Popen(
        [sys.executable, "-m", "gradexp", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + timeout
    while not list(cwd.glob(started)) and time.monotonic() < deadline:
        time.sleep(poll)
    return process


def interrupt_once_training(
    args: list[str], cwd: Path, started: str, signals: tuple[int, ...] = (signal.SIGINT,), wait: float = 1.5
) -> subprocess.CompletedProcess:
    """Run gradexp, wait until a file matching the glob `started` appears under `cwd` (training
    has begun), let it train `wait` seconds, then send `signals` (Ctrl-C by default) one after
    the other, as a user or a cluster would."""
    process = start_gradexp(args, cwd, started)
    time.sleep(wait)
    for signum in signals:
        process.send_signal(signum)
        time.sleep(0.02)
    try:
        stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()  # a run that outlived its signals must not outlive the test
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def whole_and_resumed(args: list[str], cwd: Path, wait: float) -> tuple[dict, dict]:
    """The summaries of a run never interrupted ("whole") and of the same run stopped by Ctrl-C
    `wait` seconds into training, then resumed from its checkpoint ("cut")."""
    assert run_cli(*args, "hydra.run.dir=whole", cwd=cwd).returncode == 0
    stopped = interrupt_once_training(
        [*args, "hydra.run.dir=cut"], cwd, started="cut/events.out.tfevents.*", wait=wait
    )
    assert stopped.returncode == 130, stopped.stderr
    assert read_summary(cwd / "cut")["status"] == "interrupted"
    assert run_cli("trainer.resume=cut", cwd=cwd).returncode == 0
    return read_summary(cwd / "whole"), read_summary(cwd / "cut")


def read_scalars(run_dir: Path) -> dict[str, dict[int, float]]:
    """tag -> {step: value}, from the event files TensorBoard itself would read."""
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def logged_steps(run_dir: Path, tag: str) -> list[int]:
    """Every step TensorBoard shows for `tag`, repeats included (a dict would hide them)."""
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return [e.step for e in acc.Scalars(tag)]


def first_step(cfg) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """The model as the engine builds it for `cfg`, and the run's first batch."""
    c = validate(cfg)
    torch.manual_seed(c.trainer.seed)
    task = build_task(c.task, c.trainer.seed)
    model = build_model(c, task)
    x, y = Batches(task, c.trainer.batch_size, c.trainer.seed).next()
    return model, x, y


def read_summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return tmp_path / "run"
