"""How a gradexp command ends: with everything written, and without the interpreter's teardown.

Once torch, TorchDynamo (which the first optimizer imports) and Hydra are loaded, Python's own
finalization, freeing every module and running the C++ libraries' static destructors, takes
0.6 to 0.8 s on a 2-core machine, after the last file is written: a sweep paid it once more
than its jobs, a single run once in every command. The console scripts end instead the way
`Py_FinalizeEx` begins, and then leave: the non-daemon threads joined (with the callbacks
`concurrent.futures` registers for that moment), the `atexit` handlers run (logging's flush and
close, joblib's workers shut down, multiprocessing's children joined), the standard streams
flushed (Python's and the C library's), then `os._exit` with the exit status Python would have
given. An exception other than SystemExit (a traceback, Ctrl-C) takes Python's usual way out,
untouched, and so does every exit under a debugger, profiler or coverage tool
(`python -m cProfile -m gradexp`), which writes its results at the very end.
"""

import atexit
import ctypes
import os
import sys
import threading
from collections.abc import Callable

FLUSH_FAILED = 120  # Python's exit status when flushing stdout at exit fails (a closed pipe)


def run_and_exit(main: Callable[[], object]) -> None:
    """Run a command's main function, then end the process as described above (or return, for
    Python's own exit, when a debugger, profiler or coverage tool watches)."""
    if _observed():
        main()
        return
    try:
        main()
        status = 0
    except SystemExit as stop:
        status = exit_status(stop.code)
    threading._shutdown()  # what finalization does first: join the non-daemon threads
    atexit._run_exitfuncs()
    status = _flush_streams(status)
    os._exit(status)


def exit_status(code: object) -> int:
    """The status `sys.exit(code)` gives: 0 for None, the number for an int, else 1 with the
    code written to stderr (as `sys.exit("message")` does)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _observed() -> bool:
    """A debugger, profiler or coverage tool watches this process (through a trace or profile
    function, or on Python 3.12+ through sys.monitoring)."""
    if sys.gettrace() is not None or sys.getprofile() is not None:
        return True
    monitoring = getattr(sys, "monitoring", None)
    return monitoring is not None and any(monitoring.get_tool(tool) is not None for tool in range(6))


def _flush_streams(status: int) -> int:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except ValueError:  # a stream the program closed: Python ignores it too
            pass
        except OSError:  # a closed pipe (`gradexp ... | head`)
            if stream is sys.stdout and status == 0:
                status = FLUSH_FAILED
    try:
        ctypes.CDLL(None).fflush(None)  # what C code printed (a library's own messages)
    except (OSError, AttributeError):  # no C library to load by that name (not Linux or macOS)
        pass
    return status
