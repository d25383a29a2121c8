"""How much does gradexp's recording cost? Times `train(cfg)` against a bare PyTorch loop that
trains the same model on the same data with the same optimizer, steps and validation passes,
alternating the variants in one process so that machine noise hits them alike.

    python benchmarks/overhead.py [--steps 500] [--repeats 5] [--depth 20] [--width 256]

Prints, per variant, the median time, the median of its per-repeat ratios to the bare loop, the
ratio of its fastest run to the bare loop's fastest, and its per-step ratio: its recorded steps
alternated one by one with bare steps on the same model. On a shared machine whose speed drifts
by 10 to 20% over seconds, the per-step ratio is the figure that repeats from run to run; the
fixed cost of a run (set-up, summary, final evaluation, figures) is measured apart, on one-step
runs, and the two together give what the whole run should cost.
Targets: <= 1.05x for gradient norms at the default interval and <= 1.15x for every layer's norm
at every step; with the diagnostics, <= 1.1x at their default interval and <= 1.5x with every
hook-based signal at every step (histograms stay on their coarser interval; the last row shows
what drawing them at every step too costs).
"""

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from gradexp.config import CONFIG_DIR
from gradexp.config.validate import validate
from gradexp.engine import Batches, Run, build_run, train, train_step
from gradexp.models import build_model
from gradexp.optim import OPTIMIZERS
from gradexp.tasks import build_task

FIXED_REPEATS = 15  # one-step runs are short: more of them (--fixed-repeats)


def bare_loop(cfg) -> None:
    """What a researcher would write by hand: no recording, the same work otherwise."""
    c = validate(cfg)
    t = c.trainer
    torch.manual_seed(t.seed)
    task = build_task(c.task, t.seed)
    model = build_model(c, task)
    optimizer = OPTIMIZERS[c.optimizer.name](model.parameters(), c.optimizer)
    batches = Batches(task, t.batch_size, t.seed)
    for step in range(t.steps):
        bare_update(model, optimizer, task, batches, step % t.eval_every == 0)
    validate_once(model, task)  # the final evaluation


def bare_step(run: Run, step: int) -> None:
    """The bare loop's step, on a gradexp run's own model, optimizer and batches."""
    bare_update(run.model, run.optimizer, run.task, run.batches, step % run.config.trainer.eval_every == 0)


def bare_update(model, optimizer, task, batches: Batches, evaluate: bool) -> None:
    """One step of the bare loop: the validation loss when due, then an update."""
    if evaluate:
        validate_once(model, task)
    optimizer.zero_grad(set_to_none=True)
    x, y = batches.next()
    F.cross_entropy(model(x), y).backward()
    optimizer.step()


@torch.no_grad()
def validate_once(model, task) -> None:
    model.eval()
    F.cross_entropy(model(task.x_val), task.y_val).item()
    model.train()


def step_ratio(cfg, passes: int) -> float:
    """Recorded steps over bare steps, alternated one by one on the same model in one process,
    so that the machine's drift over seconds hits both alike: the per-step cost of recording,
    flushes included, without the run's fixed costs. Steps 0 to steps - 1 are recorded, so
    every interval comes round as often as in a real run; each step's time is the least over
    `passes` passes, which drops the stalls a neighbour causes (noise only ever adds time)."""
    steps = cfg.trainer.steps
    recorded, bare = [math.inf] * steps, [math.inf] * steps
    with tempfile.TemporaryDirectory() as run_dir:
        run = build_run(validate(cfg), Path(run_dir), False, time.perf_counter(), None)
        for _ in range(passes):
            for step in range(steps):
                start = time.perf_counter()
                train_step(run, step)
                middle = time.perf_counter()
                bare_step(run, step)
                end = time.perf_counter()
                recorded[step], bare[step] = (
                    min(recorded[step], middle - start),
                    min(bare[step], end - middle),
                )
        run.tensorboard.close()
    return sum(recorded) / sum(bare)


def gradexp_run(cfg) -> None:
    with tempfile.TemporaryDirectory() as run_dir:
        train(cfg, run_dir, show_progress=False)


def alternate(configs: dict, repeats: int) -> dict[str, list[float]]:
    """Each variant's times over `repeats` rounds, after a warm-up round (allocator, kernels,
    imports); each round runs every variant once, in an order rotated from round to round."""
    times: dict[str, list[float]] = {name: [] for name in configs}
    names = list(configs)
    for fn, cfg in configs.values():
        fn(cfg)
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            fn, cfg = configs[name]
            start = time.perf_counter()
            fn(cfg)
            times[name].append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--passes", type=int, default=3, help="passes of the step-by-step comparison")
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--fixed-repeats", type=int, default=FIXED_REPEATS, help="one-step runs per variant")
    args = parser.parse_args()

    base = [
        f"model.depth={args.depth}",
        f"model.width={args.width}",
        f"trainer.steps={args.steps}",
        f"trainer.batch_size={args.batch_size}",
        "trainer.device=cpu",
    ]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        variants = {
            "bare PyTorch loop": [],
            "gradexp defaults (norms every 10, diagnostics every 50)": [],
            "gradexp defaults without the end-of-run figures": ["diagnostics.figures=false"],
            "gradexp, every layer's norm every step, no diagnostics": [
                "trainer.log_every=1",
                "diagnostics=off",
            ],
            "gradexp, every signal every step, histograms every 10": [
                "trainer.log_every=1",
                "diagnostics=full",
                "diagnostics.histograms_every=10",
            ],
            "gradexp, diagnostics=full (histograms every step too)": [
                "trainer.log_every=1",
                "diagnostics=full",
            ],
        }
        configs = {
            name: (bare_loop if i == 0 else gradexp_run, compose("config", overrides=[*base, *extra]))
            for i, (name, extra) in enumerate(variants.items())
        }
        one_step = {  # the same runs cut to one step: what a run costs whatever its length
            name: (fn, compose("config", overrides=[*base, *variants[name], "trainer.steps=1"]))
            for name, (fn, _) in list(configs.items())[:3]
        }
    times = alternate(configs, args.repeats)
    fixed = alternate(one_step, args.fixed_repeats)
    per_step = {name: step_ratio(cfg, args.passes) for name, (_, cfg) in list(configs.items())[1:]}

    names = list(configs)
    print(
        f"MLP depth {args.depth} width {args.width}, batch {args.batch_size}, {args.steps} steps, "
        f"adam, CPU with {torch.get_num_threads()} threads; median of {args.repeats} alternated runs"
    )
    fastest_bare = min(times[names[0]])
    print(f"  {'':<58} {'median':>9}   {'ratio':>11}   {'fastest':>7}  {'per step':>8}   per-repeat ratios")
    for name in names:
        # each repeat's ratio pairs runs made back to back, so slow drift of the machine cancels;
        # the fastest runs' ratio discards the repeats that a neighbour slowed down (noise only adds)
        ratios = [t / b for t, b in zip(times[name], times[names[0]])]
        step = f"{per_step[name]:7.3f}x" if name in per_step else f"{1:7.3f}x"
        print(
            f"  {name:<58} {statistics.median(times[name]):7.3f} s   {statistics.median(ratios):5.3f}x"
            f"   {min(times[name]) / fastest_bare:5.3f}x  {step}   {min(ratios):.3f}..{max(ratios):.3f}"
        )
    bare, defaults, no_figures = (statistics.median(t) for t in fixed.values())
    print(
        f"per step: {args.steps} recorded steps alternated one by one with bare ones on the same model, "
        f"each step's fastest of {args.passes} passes; flushes included, fixed costs not."
    )
    print(
        f"fixed cost of a run (the same runs cut to one step, median of {args.fixed_repeats}): the defaults' "
        f"{1000 * (defaults - bare):.0f} ms, {1000 * (defaults - no_figures):.0f} ms of it the figures."
    )
    default = names[1]
    expected = per_step[default] + (defaults - bare) / statistics.median(times[names[0]])
    print(f"so a {args.steps}-step run of the defaults: {expected:.3f}x (per step, plus the fixed cost).")


if __name__ == "__main__":
    main()
