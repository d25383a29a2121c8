"""A command's imports run with the garbage collector paused and are then frozen out of its
scans; before a process's first run, the garbage so far is collected and the rest frozen, while
what a run makes afterwards is collected as ever. Each check runs in a fresh interpreter: a
freeze lasts as long as the process."""

import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

from gradexp import startup


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )


def test_imports_run_with_the_collector_paused_then_what_they_made_is_frozen():
    result = run_python(
        """
        import gc
        from gradexp.startup import imports_paused
        assert gc.isenabled() and gc.get_freeze_count() == 0
        with imports_paused():
            paused = not gc.isenabled()
            import json, decimal
        tracked = len(gc.get_objects())
        print(paused, gc.isenabled(), gc.get_freeze_count() > 1000, tracked < 100)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True", "True", "True"]


def test_a_failed_import_leaves_the_collector_running_and_nothing_frozen():
    result = run_python(
        """
        import gc
        from gradexp.startup import imports_paused
        try:
            with imports_paused():
                import no_such_module_here
        except ImportError:
            print(gc.isenabled(), gc.get_freeze_count())
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "0"]


def test_settling_collects_the_garbage_freezes_the_rest_once_and_later_garbage_is_collected():
    result = run_python(
        """
        import gc, sys, weakref
        from gradexp.startup import settle_before_training

        class Node:
            pass

        def cycle():
            a, b = Node(), Node()
            a.other, b.other = b, a
            return weakref.ref(a)

        gc.disable()  # only the collections made here
        before = cycle()  # garbage before the freeze: collected, not frozen with the rest
        kept = Node()
        settle_before_training()
        frozen = gc.get_freeze_count()
        print(before() is None, "torch._dynamo" in sys.modules, frozen > 1000)
        after = cycle()  # a run's garbage: still collected
        settle_before_training()  # a second job: nothing more frozen
        print(gc.get_freeze_count() == frozen)
        gc.collect()
        print(after() is None)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True", "True", "True", "True"]


def test_the_commands_start_through_the_paused_imports():
    """The console scripts and `python -m gradexp` come in through startup, and run."""
    scripts = {e.name: e.value for e in entry_points(group="console_scripts") if e.name.startswith("gradexp")}
    assert scripts == {
        "gradexp": "gradexp.startup:gradexp",
        "gradexp-report": "gradexp.startup:gradexp_report",
    }
    main = (Path(startup.__file__).parent / "__main__.py").read_text()
    assert "from gradexp.startup import gradexp" in main
    for command in (
        ["-m", "gradexp", "--version"],
        ["-c", "from gradexp.startup import gradexp_report; gradexp_report()", "--help"],
    ):
        result = subprocess.run([sys.executable, *command], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert "gradexp" in result.stdout
