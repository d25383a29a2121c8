"""A gradexp command ends with os._exit, after doing what Python's finalization would have done
that anyone can see: threads joined, atexit handlers run, output flushed, the same exit status."""

import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = """
import atexit, sys, threading, time
from pathlib import Path
from gradexp.process_exit import run_and_exit

folder = Path(sys.argv[1])

def late_writer():
    time.sleep(0.3)
    (folder / "thread.txt").write_text("written by a non-daemon thread")

def main():
    atexit.register(lambda: (folder / "atexit.txt").write_text("written at exit"))
    threading.Thread(target=late_writer).start()
    sys.stdout.write("buffered, no newline")  # a pipe: block-buffered until flushed
    {ending}

run_and_exit(main)
print("never reached")
"""


def run_script(tmp_path, ending: str, *before: str) -> subprocess.CompletedProcess:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(SCRIPT).replace("{ending}", ending))
    block_buffered = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    return subprocess.run(
        [sys.executable, *before, str(script), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=block_buffered,
    )


@pytest.mark.parametrize(
    "ending, status, stderr",
    [
        ("return None", 0, ""),
        ("sys.exit(3)", 3, ""),
        ("sys.exit(None)", 0, ""),
        ("sys.exit('gradexp: error: bad key')", 1, "gradexp: error: bad key\n"),
        ("sys.exit(256 + 7)", 7, ""),
    ],
)
def test_the_process_ends_with_pythons_status_after_threads_atexit_and_output(
    tmp_path, ending, status, stderr
):
    result = run_script(tmp_path, ending)
    assert result.returncode == status, result.stderr
    assert result.stdout == "buffered, no newline"  # flushed, and nothing ran after the exit
    assert result.stderr == stderr
    assert (tmp_path / "thread.txt").read_text() == "written by a non-daemon thread"
    assert (tmp_path / "atexit.txt").read_text() == "written at exit"


def test_an_exception_takes_pythons_own_way_out(tmp_path):
    result = run_script(tmp_path, "raise RuntimeError('not a SystemExit')")
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "RuntimeError: not a SystemExit" in result.stderr
    assert (tmp_path / "atexit.txt").is_file()


def test_under_a_profiler_the_process_takes_pythons_own_exit_and_the_profile_is_written(tmp_path):
    profile = tmp_path / "run.prof"
    result = run_script(tmp_path, "sys.exit(3)", "-m", "cProfile", "-o", str(profile))
    assert result.returncode == 0, result.stderr  # cProfile's own: it ends a script's SystemExit so
    assert result.stdout == "buffered, no newline"
    assert profile.stat().st_size > 0  # cProfile writes it after the script, at Python's exit
    assert (tmp_path / "atexit.txt").is_file() and (tmp_path / "thread.txt").is_file()
