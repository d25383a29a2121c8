"""What does a sweep cost beyond its training, and what does joblib buy on this machine?

    python benchmarks/sweep_overhead.py [--jobs 8] [--small 4] [--steps 300] [--width 64] [--repeats 3]

Trains the same small MLPs (depths 2, 3, ... by seeds 0 and 1) three ways, alternately,
`--repeats` times, each for a grid of `--jobs` and a smaller one of `--small` (half as many
unless given):
- by hand in a plain loop (overhead.py's bare loop: no recording, no Hydra), in a fresh process
  as each sweep runs in one, timed inside it after a warm-up, so it pays no process start and no
  import;
- `gradexp -m ...` with Hydra's basic launcher (one process, jobs one after another);
- `gradexp -m hydra/launcher=joblib hydra.launcher.n_jobs=2 ...` (two worker processes).
The two grid sizes separate what a sweep pays once (the process start and imports, checking the
command line, the sweep table and its figures) from what it pays per job (Hydra composing the
job, the run's set-up, recording, evaluation and files). A whole sweep's time scatters by
0.3 to 0.5 s from run to run on a shared machine, and the per-job figure divides that by the
difference of the two sizes: 4 jobs (the default) cannot resolve 0.05 s a job, 24 jobs
(`--jobs 32 --small 8`) can. Part of the once-cost is any PyTorch
script's own start and end (Python, `import torch`, the first optimizer, which imports
TorchDynamo, and the interpreter's teardown, which gradexp's commands skip: process_exit.py):
it is timed apart, in a fresh process, and printed beside it.

Joblib's speed-up over the basic launcher is given three ways: for the larger grid as a whole
(both pay the sweep's own start; joblib's workers each pay a PyTorch start too); per job, from
the two grid sizes (the time one more job adds to the grid, which is what a large grid's wall
time follows); and per job from the jobs' own ends inside each larger sweep (`summary.json`,
each job's last file, written as it ends): the time from the second job's end to the last's,
over the jobs after the second (the grid's third job to its last, the same jobs under both
launchers). By then both of joblib's workers have started and run their first job, so this
rate is what the two-grid figure estimates, without the subtraction of two whole sweeps' times,
each of which carries the machine's noise of its own tens of seconds.
"""

import argparse
import glob
import os
import statistics
import subprocess
import sys
import tempfile
import time

from hydra import compose, initialize_config_dir
from overhead import bare_loop

from gradexp.config import CONFIG_DIR


def grid_arguments(description: str, jobs_help: str, two_grids: bool = False) -> argparse.Namespace:
    """The command line of the sweep benchmarks (this one and sweep_inside.py): the grid's size
    (and with `two_grids`, the smaller grid's: `--small`, half of `--jobs` unless given), its
    jobs' steps and width, and the repeats."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--jobs", type=int, default=8, help=jobs_help)
    if two_grids:
        parser.add_argument("--small", type=int, help="the smaller grid's size (default: half of --jobs)")
        parser.add_argument("--plain-of", type=int, help=argparse.SUPPRESS)  # a grid's plain loop, alone
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    return parser.parse_args()


def fixed_overrides(steps: int, width: int) -> list[str]:
    """What every job of the benchmarks' grids shares."""
    return [f"trainer.steps={steps}", f"model.width={width}", "task.n_train=2048", "task.n_val=512"]


def depths(jobs: int) -> list[str]:
    """The depths of a grid of `jobs` jobs: 2, 3, ..., each with seeds 0 and 1."""
    return [str(2 + i) for i in range(jobs // 2)]


def grid_overrides(jobs: int) -> list[str]:
    """The swept values of a grid of `jobs` jobs, as `gradexp -m` takes them."""
    return [f"model.depth={','.join(depths(jobs))}", "trainer.seed=0,1"]


def per_job_after_the_second(sweep_dir: str) -> float:
    """Seconds per job from the second job's end to the last's, read off their `summary.json`
    (see the module's docstring); the sweep's jobs end in the grid's order, two at a time under
    joblib's two workers."""
    ends = sorted(os.path.getmtime(path) for path in glob.glob(f"{sweep_dir}/*/summary.json"))
    if len(ends) < 3:
        raise SystemExit(f"{sweep_dir}: {len(ends)} jobs ended; the rate needs 3 or more")
    return (ends[-1] - ends[1]) / (len(ends) - 2)


def time_plain_loop(jobs: int, fixed: list[str]) -> float:
    """The plain loop over a grid's models, timed after a warm-up (the imports, and TorchDynamo's,
    which the first optimizer pulls in): what `--plain-of` prints, in a fresh process."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        configs = [
            compose(
                "config", overrides=[*fixed, f"model.depth={d}", f"trainer.seed={s}", "trainer.device=cpu"]
            )
            for d in depths(jobs)
            for s in (0, 1)
        ]
    bare_loop(configs[0])
    start = time.perf_counter()
    for cfg in configs:
        bare_loop(cfg)
    return time.perf_counter() - start


def main() -> None:
    args = grid_arguments(__doc__.splitlines()[0], "the larger grid's size (even)", two_grids=True)
    fixed = fixed_overrides(args.steps, args.width)
    small, large = args.small or args.jobs // 2, args.jobs
    if args.plain_of:
        print(f"{time_plain_loop(args.plain_of, fixed):.4f}")
        return

    def plain(jobs: int) -> float:
        """In a fresh process, as each sweep runs in one, timed inside it without its start.
        Alternated with fresh ones, the same 16 models ran 1.2 to 1.8 s slower in this
        long-lived process in three of four pairs (and 1.1 s faster in the fourth)."""
        size = ["--plain-of", str(jobs), "--steps", str(args.steps), "--width", str(args.width)]
        child = subprocess.run([sys.executable, __file__, *size], check=True, capture_output=True, text=True)
        return float(child.stdout.split()[-1])

    rates: dict[str, list[float]] = {"basic": [], "joblib": []}

    def sweep(jobs: int, *launcher: str) -> None:
        """One sweep; the larger grid's per-job rate is kept (per_job_after_the_second)."""
        with tempfile.TemporaryDirectory() as root:
            command = [
                sys.executable,
                "-m",
                "gradexp",
                "-m",
                *fixed,
                *grid_overrides(jobs),
                *launcher,
                f"hydra.sweep.dir={root}/s",
            ]
            subprocess.run(command, check=True, capture_output=True, cwd=root)
            if jobs == large:
                rates["joblib" if launcher else "basic"].append(per_job_after_the_second(f"{root}/s"))

    def pytorch_start() -> None:
        script = "import torch; torch.optim.Adam([torch.zeros(1, requires_grad=True)])"
        subprocess.run([sys.executable, "-c", script], check=True)

    joblib = ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    variants = {
        f"plain loop, {small} models": lambda: plain(small),
        f"plain loop, {large} models": lambda: plain(large),
        f"gradexp -m, {small} jobs (basic launcher)": lambda: sweep(small),
        f"gradexp -m, {large} jobs (basic launcher)": lambda: sweep(large),
        f"gradexp -m, {small} jobs, joblib n_jobs=2": lambda: sweep(small, *joblib),
        f"gradexp -m, {large} jobs, joblib n_jobs=2": lambda: sweep(large, *joblib),
        "a PyTorch script's start (python -c ...)": pytorch_start,
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(args.repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:  # rotate the order
            start = time.perf_counter()
            timed_inside = variants[name]()  # the plain loop's own time, without its process's start
            times[name].append(timed_inside if timed_inside is not None else time.perf_counter() - start)

    plain_small, plain_large, sweep_small, sweep_large, joblib_small, joblib_large, script_start = (
        statistics.median(times[n]) for n in names
    )
    per_job = ((sweep_large - plain_large) - (sweep_small - plain_small)) / (large - small)
    once = (sweep_small - plain_small) - small * per_job
    sweep_per_job = (sweep_large - sweep_small) / (large - small)
    joblib_per_job = (joblib_large - joblib_small) / (large - small)
    print(
        f"MLPs of width {args.width}, depths 2.., 2 seeds, {args.steps} steps, adam; "
        f"median of {args.repeats} alternated runs"
    )
    for name in names:
        each = ", ".join(f"{t:.2f}" for t in times[name])
        print(f"  {name:<45} {statistics.median(times[name]):7.2f} s   ({each})")
    print(f"  training time per job (plain loop):            {plain_large / large:6.2f} s")
    print(f"  sweep overhead per job over the plain loop:    {per_job:6.2f} s")
    print(f"  sweep overhead paid once:                      {once:6.2f} s")
    print(f"    of it, a PyTorch script's own start:         {script_start:6.2f} s")
    print(f"  joblib speed-up, {large} jobs as a whole:            {sweep_large / joblib_large:6.2f}x")
    print(
        f"  joblib speed-up per job:                       {sweep_per_job / joblib_per_job:6.2f}x"
        f"   ({sweep_per_job:.2f} s a job, against {joblib_per_job:.2f} s)"
    )
    basic_rate, joblib_rate = (statistics.median(rates[n]) for n in ("basic", "joblib"))
    print(
        f"  joblib speed-up per job, inside the sweeps:    {basic_rate / joblib_rate:6.2f}x"
        f"   ({basic_rate:.3f} s a job, against {joblib_rate:.3f} s: jobs 3 to {large} of {large})"
    )


if __name__ == "__main__":
    main()
