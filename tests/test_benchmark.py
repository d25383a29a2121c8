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
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    ratios = re.findall(r" s +(\d+\.\d+)x", result.stdout)
    assert len(ratios) == 6 and all(float(r) > 0 for r in ratios)
    assert "bare PyTorch loop" in result.stdout and "every signal every step" in result.stdout
