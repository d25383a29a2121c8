"""Thread counts for jobs that run side by side, so N parallel jobs share the cores instead of
each starting one thread per core (N x cores threads thrash the caches and the scheduler)."""

import os
import sys

from omegaconf import DictConfig


def cores() -> int:
    """The cores this process may run on (a container or a batch scheduler can allow fewer than
    the machine has)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def parallel_jobs(hydra_cfg: DictConfig) -> int:
    """How many jobs the launcher runs at once: joblib's n_jobs (-1 = one per core, -2 = all but
    one, ...), 1 for launchers that run one job per process or machine."""
    n_jobs = hydra_cfg.launcher.get("n_jobs") if "launcher" in hydra_cfg else None
    if not isinstance(n_jobs, int) or n_jobs == 0:
        return 1
    return max(1, cores() + 1 + n_jobs if n_jobs < 0 else n_jobs)


def threads_per_job(hydra_cfg: DictConfig) -> int | None:
    """torch threads for each of the launcher's parallel jobs; None leaves torch's default (a
    SLURM task's default is the cores SLURM gives it, and Ray sets it from num_cpus)."""
    cpus_per_task = hydra_cfg.launcher.get("cpus_per_task") if "launcher" in hydra_cfg else None
    if isinstance(cpus_per_task, int) and cpus_per_task > 0:  # submitit, locally or on SLURM
        return cpus_per_task
    jobs = parallel_jobs(hydra_cfg)
    if jobs == 1:
        return None
    return max(1, cores() // jobs)


def stop_idle_workers() -> None:
    """joblib's worker processes, once Hydra's joblib launcher has returned (every job done and
    its files closed, the workers idle): killed now, as joblib kills them on a timeout (which
    also removes its temporary folders). Left to the end, loky's exit handler sends each a
    sentinel and waits while it tears down its interpreter, 0.7 s with torch loaded, before the
    command can end. A job's lines are flushed as it ends. Should this fail, the workers are
    left to that exit handler, as before."""
    loky = sys.modules.get("joblib.externals.loky.reusable_executor")
    executor = getattr(loky, "_executor", None)
    if executor is None:
        return
    try:
        if hasattr(executor, "terminate"):  # joblib's executor: its memmapping folders too
            executor.terminate(kill_workers=True)
        else:
            executor.shutdown(wait=True, kill_workers=True)
    except Exception as error:  # noqa: BLE001 (the sweep is done: this only saves time)
        print(f"gradexp: joblib's workers are left to stop at exit: {error}", file=sys.stderr)
