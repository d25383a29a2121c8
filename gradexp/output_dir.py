"""One writer per run or sweep directory.

Two runs started at once with the same `hydra.run.dir` would interleave their files: one run's
summary beside the other's events. Before Hydra writes anything, the CLI claims the directory:
it creates it, takes an exclusive lock on it (`flock` on the directory itself, so no lock file
is left behind, and the kernel releases it when the process ends, however it ends) and then
looks inside. A directory another process holds, or one that already holds files, is refused
in one line, except by a resume, which is meant to go on in it. Where the directory is Hydra's
dated default rather than one the user typed, a busy one is not an error: the next free
sibling (`<dir>-1`, `<dir>-2`, ...) is taken instead.
"""

import os
from pathlib import Path

from gradexp.config.errors import ConfigError

try:
    import fcntl
except ImportError:  # Windows: no flock; the emptiness check still guards against reuse
    fcntl = None

_held: list[int] = []  # descriptors of the directories this process holds, open until it exits
MAX_SIBLINGS = 100
BUSY = "another gradexp process is writing into it"


def claim(directory: Path, key: str, resume: bool, typed: bool, allowed: str) -> Path:
    """Lock `directory` (created if missing) for this process and return it; `key` and
    `allowed` word the one-line refusal. With `resume` the directory may hold files (its own
    run's or sweep's); without it, it must be empty. An untyped (default) directory that is
    busy or full gives way to the next free sibling."""
    candidates = [directory] if typed else [directory, *_siblings(directory)]
    for candidate in candidates:
        problem = _try(candidate, resume)
        if problem is None:
            return candidate
        if typed or resume:
            busy = problem == BUSY
            raise ConfigError(
                key, str(directory), problem, "another directory, or wait until it ends" if busy else allowed
            )
    raise ConfigError(key, str(directory), f"it and its next {MAX_SIBLINGS} siblings are taken", allowed)


def _siblings(directory: Path):
    return (directory.with_name(f"{directory.name}-{i}") for i in range(1, MAX_SIBLINGS + 1))


def _try(directory: Path, resume: bool) -> str | None:
    """Why `directory` cannot be this process's, or None once it is (locked)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory, os.O_RDONLY)
    except OSError as error:
        return f"cannot be created or opened: {error.strerror}"
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return BUSY
    if not resume:
        entries = sorted(p.name for p in directory.iterdir())
        if entries:
            os.close(fd)  # releases the lock
            shown = ", ".join(entries[:4]) + (", ..." if len(entries) > 4 else "")
            return f"already holds files ({shown})"
    _held.append(fd)
    return None


def release_all() -> None:
    """Let go of every directory this process holds (for tests and long-lived callers; a CLI
    process simply exits)."""
    while _held:
        os.close(_held.pop())
