"""A sweep on a real SLURM cluster: tests/slurm/cluster starts slurmctld, slurmd and slurmdbd on
this machine, `gradexp -m hydra/launcher=slurm` submits the sweep through submitit as a job array
and every job runs under sbatch; a job cancelled with scancel (a pre-emption) becomes an
interrupted row while the others complete, and sweep.resume=true runs it again from its
checkpoint. Skipped, with the reason, where the cluster cannot be started."""

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import read_summary, start_gradexp

CLUSTER = Path(__file__).parent / "slurm" / "cluster"
SWEEP = [
    "-m",
    "hydra/launcher=slurm",
    "hydra.launcher.cpus_per_task=1",  # two jobs at once on this 2-core node
    "hydra.launcher.mem_gb=1",
    "model.depth=2,3,4",
    "model.width=16",
    "task.n_train=256",
    "trainer.steps=6000",  # about 10 s a job: the second one is still training when it is cancelled
    "trainer.log_every=100",
    "hydra.sweep.dir=sweep",
]


@pytest.fixture
def slurm_env(started_cluster: dict[str, str], tmp_path_factory) -> Iterator[dict[str, str]]:
    """The environment in which SLURM's commands reach the test cluster, which is this test's
    alone while it runs: the test processes take turns through the lock that starting it takes,
    so that a test that restarts its daemons never does so under another test's jobs."""
    with _cluster_lock(tmp_path_factory):
        yield started_cluster


def start_cluster(*prefix: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`tests/slurm/cluster start` (after `prefix`, a command it runs under), which must succeed."""
    started = subprocess.run(
        [*prefix, str(CLUSTER), "start"], env=env, capture_output=True, text=True, timeout=600
    )
    assert started.returncode == 0, started.stderr
    return started


@contextmanager
def _cluster_lock(tmp_path_factory) -> Iterator[None]:
    with open(tmp_path_factory.getbasetemp().parent / "slurm-cluster.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@pytest.fixture(scope="session")
def started_cluster(tmp_path_factory) -> dict[str, str]:
    """The cluster, started once per test process (starting a cluster that is up with the same
    configuration does nothing)."""
    if os.geteuid() != 0:
        pytest.skip("starting slurmctld and slurmd needs root")
    if shutil.which("slurmctld", path=f"{os.environ.get('PATH', '')}:/usr/sbin") is None:
        pytest.skip("SLURM is not installed: tests/slurm/cluster start installs it from Debian's packages")
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="the [slurm] extra is not installed")
    with _cluster_lock(tmp_path_factory):
        started = start_cluster()
    conf = started.stdout.strip().rpartition("SLURM_CONF=")[2]
    return {**os.environ, "SLURM_CONF": conf, "COLUMNS": "200"}


def test_the_cluster_node_has_every_core_even_when_started_under_one_openmp_thread(slurm_env):
    """The test suite runs with OMP_NUM_THREADS=1, which coreutils' nproc obeys: the node must
    still get every core, or a job of the launcher's default 2 CPUs never starts."""
    start_cluster(env={**slurm_env, "OMP_NUM_THREADS": "1"})
    conf = Path(slurm_env["SLURM_CONF"]).read_text()
    assert f" CPUs={len(os.sched_getaffinity(0))} " in conf, conf


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores to tell the CPU counts apart")
def test_a_cluster_started_again_with_another_configuration_runs_with_the_new_one(slurm_env):
    """Started on one core (taskset), the node has 1 CPU; started again with every core, it has
    them all: running daemons are restarted when the configuration they read has changed, where
    they would otherwise keep the old one until `stop`."""

    def start_and_read_cpus(*prefix: str) -> str:
        start_cluster(*prefix, env=slurm_env)
        sinfo = subprocess.run(["sinfo", "-h", "-o", "%c"], env=slurm_env, capture_output=True, text=True)
        return sinfo.stdout.strip()

    try:
        one_core = start_and_read_cpus("taskset", "-c", "0")
    finally:  # every core again, whatever happened: the tests after this one share the cluster
        every_core = start_and_read_cpus()
    assert (one_core, every_core) == ("1", str(len(os.sched_getaffinity(0))))


def test_a_sweep_runs_as_a_job_array_and_a_cancelled_job_resumes(tmp_path, slurm_env):
    started = "sweep/001_*/events.out.tfevents.*"
    sweep = start_gradexp(SWEEP, tmp_path, started, env=slurm_env, timeout=180, poll=0.3)
    time.sleep(1)
    queue = subprocess.run(["squeue", "-h", "-o", "%i %T"], env=slurm_env, capture_output=True, text=True)
    [task] = [line.split()[0] for line in queue.stdout.splitlines() if line.split()[0].endswith("_1")]
    array = task.split("_")[0]
    subprocess.run(["scancel", task], env=slurm_env, check=True)  # a pre-emption of job 001
    try:
        stdout, stderr = sweep.communicate(timeout=300)
    finally:
        sweep.kill()
    assert sweep.returncode == 1, stderr  # not every job finished
    assert "3 jobs: 2 completed, 1 interrupted" in stdout

    table = json.loads((tmp_path / "sweep" / "sweep_table.json").read_text())
    assert [row["status"] for row in table["jobs"]] == ["completed", "interrupted", "completed"]
    cancelled = next((tmp_path / "sweep").glob("001_*"))
    assert 0 < read_summary(cancelled)["steps_completed"] < 6000
    assert (cancelled / "checkpoint.pt").is_file()
    accounting = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", array],
        env=slurm_env,
        capture_output=True,
        text=True,
    )
    states = dict(line.split("|") for line in accounting.stdout.splitlines())
    assert states == {f"{array}_0": "COMPLETED", f"{array}_1": "CANCELLED by 0", f"{array}_2": "COMPLETED"}

    kept = read_summary(next((tmp_path / "sweep").glob("000_*")))
    resumed = subprocess.run(
        [sys.executable, "-m", "gradexp", *SWEEP, "sweep.resume=true"],
        cwd=tmp_path,
        env=slurm_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "3 jobs: 3 completed" in resumed.stdout
    assert read_summary(next((tmp_path / "sweep").glob("000_*"))) == kept  # a finished job is kept as it was
    assert read_summary(cancelled)["status"] == "completed"
    assert read_summary(cancelled)["steps_completed"] == 6000
