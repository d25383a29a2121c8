"""How a gradexp command starts: its imports kept out of the garbage collector's way.

A command imports torch and Hydra, then TorchDynamo (which every PyTorch optimizer imports at
its first use) and, to draw, matplotlib: objects (modules, classes, functions) that live as
long as the process, about 330,000 before matplotlib's. CPython's cyclic collector walks every
object it tracks at each full collection, so each one costs more as the imports grow: a sweep
of four small jobs did six of them, 0.5 s in all. So the commands import with the collector
paused, then freeze what they imported (`gc.freeze`, as the `gc` documentation advises for a
process's long-lived state): later collections leave it out. Reference counting still frees a
frozen object; only a reference cycle frozen before it became garbage stays in memory, so a
freeze comes where little besides the imports is alive: once they are done, and once more
before a process's first run trains, after a collection.
"""

import contextlib
import gc
from collections.abc import Iterator

_settled = False  # this process froze before its first run


@contextlib.contextmanager
def imports_paused() -> Iterator[None]:
    """Import within it with the collector paused; what is alive at its end is frozen."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
    gc.freeze()


def settle_before_training() -> None:
    """Once per process, before its first run builds anything: TorchDynamo imported (its first
    optimizer would import it a moment later), what is garbage by then collected, and the rest
    frozen. A sweep's worker process (joblib, submitit) comes here with its first job."""
    global _settled
    if _settled:
        return
    _settled = True
    with contextlib.suppress(ImportError):  # a torch build without TorchDynamo
        import torch._dynamo  # noqa: F401
    gc.collect()
    gc.freeze()


def gradexp() -> None:
    """The `gradexp` command (and `python -m gradexp`)."""
    with imports_paused():
        from gradexp.cli import entry
    entry()


def gradexp_report() -> None:
    """The `gradexp-report` command."""
    with imports_paused():
        from gradexp.sweeps.report import entry
    entry()
