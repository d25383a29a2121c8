"""Which device a run trains on: `trainer.device` is auto, cpu, cuda or cuda:N."""

import os
import re

import torch

_CUDA = re.compile(r"cuda(?::(\d+))?")


def device_problem(spec: str) -> tuple[str, str] | None:
    """Why `spec` cannot be used on this machine, and what can: None when it can."""
    if spec in ("auto", "cpu"):
        return None
    match = _CUDA.fullmatch(spec)
    if match is None:
        return "not a device", "auto, cpu, cuda, cuda:N"
    if not torch.cuda.is_available():
        return "CUDA is not available on this machine", "auto, cpu"
    count = torch.cuda.device_count()
    if match.group(1) is not None and int(match.group(1)) >= count:
        return f"this machine has {count} CUDA device(s)", f"auto, cpu, cuda, cuda:0 to cuda:{count - 1}"
    return None


def resolve_device(spec: str) -> torch.device:
    """`auto` takes the first CUDA device when there is one, else the CPU."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


def host_memory_bytes() -> int | None:
    """The machine's memory, which every run needs: the task and the model are built on the
    host before they move to a GPU. None where it cannot be read. (Asking a GPU for its memory
    would initialize CUDA in the process that checks the command line.)"""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not a POSIX system
        return None
