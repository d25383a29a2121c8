"""What do norms that never overflow cost? Times gradexp's `scaled_norms.norms` against the plain
fused float32 norm (`torch._foreach_norm`, what PyTorch's clip_grad_norm_ and gradexp before it
used) on the gradients of the overhead benchmark's MLP, alternated in one process:

    python benchmarks/norms.py [--depth 20] [--width 256] [--repeats 2000]

Rows: ordinary gradients (the CPU path: the plain norm plus one range check); the same with one
layer of 1e21 entries (measured again, scaled); every tensor by the scaled path (what a GPU runs
at every step: a max, a multiply by a power of two and a norm, three fused kernels).
"""

import argparse
import statistics
import time

import torch

from gradexp import scaled_norms


def timed(fn, repeats: int) -> list[float]:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2000)
    args = parser.parse_args()
    torch.manual_seed(0)
    shapes = [(args.width, 32)] + [(args.width, args.width)] * (args.depth - 1) + [(4, args.width)]
    grads = [t for shape in shapes for t in (torch.randn(shape) * 1e-3, torch.randn(shape[0]) * 1e-3)]
    huge = [g.clone() for g in grads]
    huge[2].mul_(1e24)  # one layer's entries around 1e21: a plain norm reads infinity
    layout = scaled_norms.Layout.of(grads)  # made once, as the recorder does
    cases = {
        "plain float32 _foreach_norm (overflows past 1.8e19)": lambda: torch.stack(
            torch._foreach_norm(grads)
        ),
        "scaled_norms.norms, ordinary gradients": lambda: scaled_norms.norms(grads, layout),
        "scaled_norms.norms, one layer of 1e21 entries": lambda: scaled_norms.norms(huge, layout),
        "every tensor scaled (the GPU path, here on the CPU)": lambda: scaled_norms._scaled(grads),
    }
    times = {name: [] for name in cases}
    for _ in range(5):  # rounds alternate the cases, so that drift hits them alike
        for name, fn in cases.items():
            times[name] += timed(fn, args.repeats // 5)
    plain = statistics.median(times[next(iter(cases))])
    print(
        f"{len(grads)} gradients of the MLP depth {args.depth} width {args.width} "
        f"({sum(g.numel() for g in grads):,} entries), CPU with {torch.get_num_threads()} threads; "
        f"median of {args.repeats} calls each"
    )
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:<55} {1e6 * median:9.1f} us  {median / plain:6.2f}x")


if __name__ == "__main__":
    main()
