"""Where a sweep's per-job cost goes, timed inside the sweep's own process.

    python benchmarks/sweep_inside.py [--jobs 8] [--steps 300] [--width 64] [--repeats 3]

sweep_overhead.py finds the per-job cost as a difference between two sweeps' times, which this
shared machine's noise scatters by about 0.05 s either way. Here one sweep of `--jobs` small MLPs
(sweep_overhead.py's grid: depths 2, 3, ... by seeds 0 and 1) runs in this process with Hydra's
basic launcher, started as the `gradexp` command starts, and each job is timed in parts:
- the job itself (`train`) against its plain loop (overhead.py's bare loop, on the same config),
  run in this process right after it, so that both meet the same machine;
- around it: the job's config composed, and Hydra's `run_job` around `train` (it saves the job's
  config files and sets up its logging) with gradexp's job function (the job's line printed);
- its share of the sweep's end: the table and figures of the whole grid, made again from copies
  of the jobs' directories, against those of half of them, each in a fresh process (as a sweep
  draws them in a process that has drawn nothing yet), alternated `--repeats` times.
The first job also pays the process's one-time costs (TorchDynamo's import among them), so the
per-job figures are medians over the other jobs.
"""

import contextlib
import functools
import io
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gradexp.startup import imports_paused

with imports_paused():  # as the gradexp command imports
    import hydra._internal.core_plugins.basic_launcher as basic_launcher
    from hydra.core.plugins import Plugins
    from overhead import bare_loop
    from sweep_overhead import fixed_overrides, grid_arguments, grid_overrides

    from gradexp import cli
    from gradexp.config.compose import ComposeOnce
    from gradexp.run_files import MULTIRUN
    from gradexp.sweeps import report


def main() -> None:
    args = grid_arguments(__doc__.splitlines()[0], "the grid's size (even)")
    jobs: list[dict[str, float]] = []
    _time_the_parts(jobs)
    with tempfile.TemporaryDirectory() as root:
        sweep = Path(root) / "sweep"
        grid = [*fixed_overrides(args.steps, args.width), *grid_overrides(args.jobs)]
        sys.argv = ["gradexp", "-m", *grid, f"hydra.sweep.dir={sweep}"]
        printed = io.StringIO()  # the sweep's job lines and table, shown only if it fails
        try:
            with contextlib.redirect_stdout(printed):
                cli.main()
        except SystemExit as stop:
            if stop.code:
                sys.exit(f"the sweep failed:\n{printed.getvalue()}")
        whole, half = _sweep_end(sweep, Path(root), args.jobs, args.repeats)

    later = jobs[1:]

    def median(key: str) -> float:
        return statistics.median(job[key] for job in later)

    beyond = median("train") - median("bare")
    hydra = median("run_job") - median("train") - median("bare")
    compose = median("compose")
    end = (whole - half) / (args.jobs - args.jobs // 2)
    print(
        f"{args.jobs} MLPs of width {args.width}, depths 2.., 2 seeds, {args.steps} steps, adam; "
        f"medians over jobs 2 to {args.jobs}"
    )
    print(f"  plain loop per job:                          {median('bare'):6.3f} s")
    print(f"  the job (train) beyond its plain loop:       {beyond:6.3f} s")
    print(f"  run_job around train (Hydra's, the job line):{hydra:6.3f} s")
    print(f"  the job's config:                            {compose:6.3f} s")
    print(
        f"  its share of the sweep's end:                {end:6.3f} s"
        f"   (the table and figures: {whole:.2f} s for {args.jobs} jobs, {half:.2f} s for {args.jobs // 2})"
    )
    print(f"  per job in all:                              {beyond + hydra + compose + end:6.3f} s")
    print(f"  the first job, beyond its plain loop:        {jobs[0]['run_job'] - jobs[0]['bare']:6.3f} s")


def _time_the_parts(jobs: list[dict[str, float]]) -> None:
    """Wrap what the sweep calls per job so that each call adds its times to `jobs`. Hydra's
    first plugin scan executes the launcher's module again, so it is made to scan first."""
    Plugins.instance()
    run_job, train, compose = basic_launcher.run_job, cli.train, ComposeOnce.load_sweep_config

    @functools.wraps(compose)
    def timed_compose(*args, **kwargs):
        start = time.perf_counter()
        config = compose(*args, **kwargs)
        jobs.append({"compose": time.perf_counter() - start})
        return config

    @functools.wraps(run_job)
    def timed_run_job(*args, **kwargs):
        start = time.perf_counter()
        result = run_job(*args, **kwargs)
        jobs[-1]["run_job"] = time.perf_counter() - start
        return result

    @functools.wraps(train)
    def timed_train(cfg, *args, **kwargs):
        start = time.perf_counter()
        summary = train(cfg, *args, **kwargs)
        jobs[-1]["train"] = time.perf_counter() - start
        start = time.perf_counter()
        bare_loop(cfg)
        jobs[-1]["bare"] = time.perf_counter() - start
        return summary

    basic_launcher.run_job, cli.train, ComposeOnce.load_sweep_config = (
        timed_run_job,
        timed_train,
        timed_compose,
    )


def _sweep_end(sweep: Path, scratch: Path, count: int, repeats: int) -> tuple[float, float]:
    """The sweep's end (its table and figures) for all its jobs and for half of them, each the
    median of `repeats` alternated runs, each in a fresh process that has imported what the
    command imports (the end of a sweep draws in a process that has drawn nothing yet), on a
    fresh copy of the jobs' directories. The copies leave out Hydra's record of the grid, so the
    half is no interrupted sweep."""
    runs = sorted(p for p in sweep.iterdir() if (p / ".hydra").is_dir())
    assert len(runs) == count, f"{len(runs)} job directories, not {count}"
    times: dict[int, list[float]] = {count: [], count // 2: []}
    for repeat in range(repeats):
        for size in times:
            copy = scratch / f"end{size}_{repeat}"
            for run in runs[:size]:
                shutil.copytree(run, copy / run.name)
            assert not (copy / MULTIRUN).exists()
            timed = subprocess.run(
                [sys.executable, __file__, "--end-of", str(copy)], check=True, capture_output=True, text=True
            )
            times[size].append(float(timed.stdout.split()[-1]))
    return statistics.median(times[count]), statistics.median(times[count // 2])


def _time_the_end(copy: Path) -> None:
    """In a fresh process: the sweep's end for the jobs in `copy`, its time the last word printed."""
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        report.finish_sweep(copy)
    print(f"{time.perf_counter() - start:.4f}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--end-of"]:
        _time_the_end(Path(sys.argv[2]))
    else:
        main()
