"""The overhead benchmark still runs and prints a ratio for each variant (its figures are read
by a person, never asserted: timing on a shared machine is noise)."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_overhead_benchmark_prints_a_ratio_per_variant():
    result = subprocess.run(
        [
            sys.executable,
            "benchmarks/overhead.py",
            "--steps",
            "5",
            "--repeats",
            "1",
            "--depth",
            "2",
            "--width",
            "8",
            "--fixed-repeats",
            "2",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    rows = re.findall(
        r"^  (\S.*?) +\d+\.\d+ s +(\d+\.\d+)x +(\d+\.\d+)x +(\d+\.\d+)x", result.stdout, re.MULTILINE
    )
    assert re.search(r"^fixed cost of a run .*: the defaults' -?\d+ ms, -?\d+ ms of it", result.stdout, re.M)
    assert re.search(r"^so a 5-step run of the defaults: \d+\.\d+x", result.stdout, re.M)
    assert [name for name, *_ in rows] == [
        "bare PyTorch loop",
        "gradexp defaults (norms every 10, diagnostics every 50)",
        "gradexp defaults without the end-of-run figures",
        "gradexp, every layer's norm every step, no diagnostics",
        "gradexp, every signal every step, histograms every 10",
        "gradexp, diagnostics=full (histograms every step too)",
    ]


def test_sweep_benchmark_prints_per_job_overhead_and_joblib_speed_up():
    result = subprocess.run(
        [sys.executable, "benchmarks/sweep_overhead.py", "--jobs", "4", "--steps", "5", "--repeats", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"sweep overhead per job over the plain loop: +-?\d+\.\d+ s", result.stdout)
    assert re.search(r"joblib speed-up over the basic launcher: +\d+\.\d+x", result.stdout)
