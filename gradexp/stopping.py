"""Stop a run cleanly on Ctrl-C or SIGTERM: the first signal asks the training loop to stop at
the end of the step it is in, so what it recorded is whole; a second one stops at once.

A cluster's pre-emption and `kill` send SIGTERM, a terminal sends SIGINT; both end the run the
same way, as `RunStopped` (a KeyboardInterrupt, so code that already handles Ctrl-C handles it).
"""

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class RunStopped(KeyboardInterrupt):
    """The run was asked to stop by `signum` (SIGINT or SIGTERM)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopRequest:
    """Set by the first signal; the training loop calls `check` at the end of each step."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.forced: int | None = None  # the second signal, which stops the run at once
        self._deferred = False

    def check(self) -> None:
        if self.signum is not None:
            raise RunStopped(self.signum)

    def defer(self) -> None:
        """From now on a signal is only noted: the run is writing its summary, which takes well
        under a second and must not be cut in half."""
        self._deferred = True

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None and not self._deferred:  # the second signal: stop now
            self.forced = signum
            raise RunStopped(signum)
        self.signum = signum


_ACTIVE: list[StopRequest] = []  # the requests of the stop_requests blocks now running


def check_stop() -> None:
    """Raise RunStopped if a signal has come since the current stop_requests block began: for
    long work before the first step (a download), which the first Ctrl-C should end at once."""
    if _ACTIVE:
        _ACTIVE[-1].check()


@contextmanager
def stop_requests() -> Iterator[StopRequest]:
    """Handle SIGINT and SIGTERM while the block runs, then restore the handlers there were.
    Outside the main thread (where Python cannot install handlers) signals keep their meaning
    and `check` never raises."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {s: signal.signal(s, request._handle) for s in (signal.SIGINT, signal.SIGTERM)}
    _ACTIVE.append(request)
    try:
        yield request
    finally:
        _ACTIVE.remove(request)
        for s, handler in previous.items():
            signal.signal(s, handler)
