"""What does a sweep cost beyond its training, and what does joblib buy on this machine?

    python benchmarks/sweep_overhead.py [--jobs 8] [--steps 300] [--repeats 3]

Runs one grid of small jobs three ways, alternately, `--repeats` times:
- a plain loop: the same models trained one after another in this process, by hand (the bare
  loop of overhead.py), with no recording, no Hydra and no process start;
- `gradexp -m ...` with Hydra's basic launcher (one process, jobs one after another);
- `gradexp -m hydra/launcher=joblib hydra.launcher.n_jobs=2 ...` (two worker processes, each job
  with cores / 2 torch threads).
Prints the median times, the per-job overhead of the sweep over the plain loop (everything:
the process start, Hydra composing each job, recording, the job's files, the sweep table and the
figures), and joblib's speed-up over the basic launcher.
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time

from hydra import compose, initialize_config_dir
from overhead import bare_loop

from gradexp.config import CONFIG_DIR


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=8, help="grid size (depths 2, 3, ... by seeds 0, 1)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    depths = [str(2 + i) for i in range(args.jobs // 2)]
    fixed = [f"trainer.steps={args.steps}", "model.width=64", "task.n_train=2048", "task.n_val=512"]
    grid = [f"model.depth={','.join(depths)}", "trainer.seed=0,1"]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        configs = [
            compose(
                "config", overrides=[*fixed, f"model.depth={d}", f"trainer.seed={s}", "trainer.device=cpu"]
            )
            for d in depths
            for s in (0, 1)
        ]

    def plain() -> None:
        for cfg in configs:
            bare_loop(cfg)

    def sweep(*launcher: str) -> None:
        with tempfile.TemporaryDirectory() as root:
            command = [
                sys.executable,
                "-m",
                "gradexp",
                "-m",
                *fixed,
                *grid,
                *launcher,
                f"hydra.sweep.dir={root}/s",
            ]
            subprocess.run(command, check=True, capture_output=True, cwd=root)

    variants = {
        "plain loop, in this process": plain,
        "gradexp -m (basic launcher)": sweep,
        "gradexp -m hydra/launcher=joblib n_jobs=2": lambda: sweep(
            "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"
        ),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(args.repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:  # rotate the order
            start = time.perf_counter()
            variants[name]()
            times[name].append(time.perf_counter() - start)

    median = {name: statistics.median(t) for name, t in times.items()}
    plain_s, basic_s, joblib_s = (median[n] for n in names)
    print(
        f"{args.jobs} jobs (MLP width 64, depths {depths[0]}..{depths[-1]} x 2 seeds, {args.steps} steps, "
        f"adam), median of {args.repeats} alternated runs"
    )
    for name in names:
        print(f"  {name:<45} {median[name]:7.2f} s   ({', '.join(f'{t:.2f}' for t in times[name])})")
    print(
        f"  sweep overhead per job over the plain loop:   {(basic_s - plain_s) / args.jobs:6.2f} s "
        f"({basic_s / plain_s:.2f}x the plain loop)"
    )
    print(f"  joblib speed-up over the basic launcher:       {basic_s / joblib_s:6.2f}x")


if __name__ == "__main__":
    main()
