"""How a gradexp command ends: with everything written, and without the interpreter's teardown.

Once torch, TorchDynamo (which the first optimizer imports) and Hydra are loaded, Python's own
finalization, freeing every module and running the C++ libraries' static destructors, takes
0.6 to 0.8 s on a 2-core machine, after the last file is written: a sweep paid it once more
than its jobs, a single run once in every command. The console scripts end instead the way
`Py_FinalizeEx` begins, and then leave: the non-daemon threads joined (with the callbacks
`concurrent.futures` registers for that moment), the `atexit` handlers run (logging's flush and
close, joblib's workers shut down, multiprocessing's children joined), the standard streams
flushed, then `os._exit` with the exit status Python would have given. An exception other than
SystemExit (a traceback, Ctrl-C) takes Python's usual way out, untouched.
"""

import atexit
import os
import sys
import threading
from collections.abc import Callable
from typing import NoReturn

FLUSH_FAILED = 120  # Python's exit status when flushing stdout at exit fails (a closed pipe)


def run_and_exit(main: Callable[[], object]) -> NoReturn:
    """Run a command's main function, then end the process as described above."""
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


def _flush_streams(status: int) -> int:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):  # a closed pipe (`gradexp ... | head`) or stream
            if stream is sys.stdout and status == 0:
                status = FLUSH_FAILED
    return status
