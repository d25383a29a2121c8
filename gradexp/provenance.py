"""What a run needs to be re-run exactly, beside its resolved config: the command, the one-run
command that reproduces it, the versions of what computed it, and gradexp's git commit when it
runs from a checkout."""

import functools
import os
import platform
import shlex
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

PACKAGES = ("gradexp", "torch", "hydra-core", "omegaconf", "numpy", "tensorboard")
# The gradexp command as the user typed it: the CLI sets this before it rewrites its arguments (a
# resume adds the run's own overrides); launchers that start jobs in other processes pass the
# environment on, so each job records the command that started its sweep.
COMMAND_ENV = "GRADEXP_COMMAND"
HOW_IT_RAN = ("trainer.resume=", "sweep.resume=")  # overrides that say how a run went on, not what it is


def launcher(processes: int) -> list[str]:
    """The command that starts gradexp on `processes` processes: itself, or torchrun's."""
    return ["gradexp"] if processes == 1 else ["torchrun", f"--nproc_per_node={processes}", "-m", "gradexp"]


def provenance(
    overrides: list[str], device: torch.device | None, deterministic: bool, processes: int = 1
) -> dict:
    on_cuda = device is not None and device.type == "cuda"
    return {
        "command": os.environ.get(COMMAND_ENV) or shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        # this run alone, from the start, whatever sweep it was in and however often it was resumed
        "rerun": shlex.join([*launcher(processes), *(o for o in overrides if not o.startswith(HOW_IT_RAN))]),
        "versions": versions(),
        "git_commit": _git_commit(),
        "platform": platform.platform(),
        "cuda": torch.version.cuda,
        "device_name": torch.cuda.get_device_name(device) if on_cuda else None,
        "deterministic": deterministic,
    }


@functools.cache
def versions() -> dict[str, str | None]:
    """Python's and the packages' versions: what a summary records and `gradexp --version` says."""
    found = {"python": platform.python_version(), **{name: package_version(name) for name in PACKAGES}}
    found["torch"] = torch.__version__  # with its build ("+cu130", "+cpu"), which the metadata may lack
    return found


def package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


@functools.cache
def _git_commit() -> str | None:
    """The commit of the checkout gradexp runs from, with "-dirty" when tracked files changed;
    None for an installed wheel or without git."""
    source = Path(__file__).resolve().parent.parent
    try:
        commit = _git(source, "rev-parse", "HEAD")
        dirty = _git(source, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "") if commit else None


def _git(where: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(where), *args], capture_output=True, text=True, timeout=10)
    if done.returncode != 0:
        raise subprocess.SubprocessError(done.stderr)
    return done.stdout.strip()
