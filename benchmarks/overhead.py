"""How much does gradexp's recording cost? Times `train(cfg)` against a bare PyTorch loop that
trains the same model on the same data with the same optimizer, steps and validation passes,
alternating the variants in one process so that machine noise hits them alike.

    python benchmarks/overhead.py [--steps 500] [--repeats 5] [--depth 20] [--width 256]

Prints, per variant, the median time, the median of its per-repeat ratios to the bare loop, and
the ratio of its fastest run to the bare loop's fastest (the most robust figure on a shared
machine, where noise only ever adds time).
Targets: <= 1.05x for gradient norms at the default interval and <= 1.15x for every layer's norm
at every step; with the diagnostics, <= 1.1x at their default interval and <= 1.5x with every
hook-based signal at every step (histograms stay on their coarser interval; the last row shows
what drawing them at every step too costs).
"""

import argparse
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from gradexp.config import CONFIG_DIR
from gradexp.config.validate import validate
from gradexp.engine import Batches, train
from gradexp.models import build_model
from gradexp.optim import OPTIMIZERS
from gradexp.tasks import build_task


def bare_loop(cfg) -> None:
    """What a researcher would write by hand: no recording, the same work otherwise."""
    c = validate(cfg)
    t = c.trainer
    torch.manual_seed(t.seed)
    task = build_task(c.task, t.seed)
    model = build_model(c, task)
    optimizer = OPTIMIZERS[c.optimizer.name](model.parameters(), c.optimizer)
    batches = Batches(task, t.batch_size, t.seed)
    for step in range(t.steps + 1):
        if step % t.eval_every == 0 or step == t.steps:
            with torch.no_grad():
                model.eval()
                F.cross_entropy(model(task.x_val), task.y_val).item()
                model.train()
        if step == t.steps:
            break
        optimizer.zero_grad(set_to_none=True)
        x, y = batches.next()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()


def gradexp_run(cfg) -> None:
    with tempfile.TemporaryDirectory() as run_dir:
        train(cfg, run_dir, show_progress=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=128)
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
    times: dict[str, list[float]] = {name: [] for name in configs}
    names = list(configs)
    for fn, cfg in configs.values():  # warm-up: allocator, kernels, imports
        fn(cfg)
    for r in range(args.repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:  # rotate the order
            fn, cfg = configs[name]
            start = time.perf_counter()
            fn(cfg)
            times[name].append(time.perf_counter() - start)

    print(
        f"MLP depth {args.depth} width {args.width}, batch {args.batch_size}, {args.steps} steps, "
        f"adam, CPU with {torch.get_num_threads()} threads; median of {args.repeats} alternated runs"
    )
    fastest_bare = min(times[names[0]])
    print(f"  {'':<58} {'median':>9}   {'ratio':>11}   {'fastest':>7}  per-repeat ratios")
    for name in names:
        # each repeat's ratio pairs runs made back to back, so slow drift of the machine cancels;
        # the fastest runs' ratio discards the repeats that a neighbour slowed down (noise only adds)
        ratios = [t / b for t, b in zip(times[name], times[names[0]])]
        print(
            f"  {name:<58} {statistics.median(times[name]):7.3f} s   {statistics.median(ratios):5.3f}x"
            f"   {min(times[name]) / fastest_bare:5.3f}x   {min(ratios):.3f}..{max(ratios):.3f}"
        )


if __name__ == "__main__":
    main()
