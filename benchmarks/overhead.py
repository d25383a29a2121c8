"""How much does gradexp's recording cost? Times `train(cfg)` against a bare PyTorch loop that
trains the same model on the same data with the same optimizer, steps and validation passes,
alternating the variants in one process so that machine noise hits them alike.

    python benchmarks/overhead.py [--model {mlp,custom,resnet,transformer,all}] [--steps 500]
        [--repeats 5] [--depth 20] [--width 256] [--custom-depth 8] [--cnn-depth 20]
        [--transformer-depth 6] [--precision {32,bf16,fp16,all}]

Runs the variants on gradexp's MLP, on a network it does not know (`model=custom` with
custom_model.ResidualTower, a pre-LN residual tower), on the built-in ResNet (task=images) and
on the built-in Pre-LN Transformer (task=tokens), one table each with its own bare loop.
`--precision` runs both in bf16 or fp16 (torch.autocast; fp16 with GradScaler's dynamic loss
scale, which the bare loop uses as `scaler.scale(loss).backward(); scaler.step(); scaler.update()`),
a table per precision.

Prints, per variant, the median time, the median of its per-repeat ratios to the bare loop, the
ratio of its fastest run to the bare loop's fastest, and its per-step ratio: its recorded steps
alternated with bare steps on the same model, two after each, the first of which pays what the
recorded step left to the next (the difference between the two is charged to the recording).
On a shared machine whose speed drifts by 10 to 20% over seconds, the per-step ratio is the
figure that repeats from run to run; the fixed cost of a run (set-up, summary, final
evaluation, figures) is measured apart, on one-step runs, and the two together give what the
whole run should cost.

The flushes (measurements copied to the host and written to TensorBoard, about once a second)
are timed apart: a flush lands on a different step in each pass, so a per-step minimum over the
passes would drop it every time. Each step keeps its fastest time without the flush inside it,
and the per-step figure adds back what the median pass spent flushing. The passes pace their
flushes on the recorded steps' own clock, which leaves out the bare steps in between, and flush
what is pending at their end, as a run does: a pass flushes as often as the run it stands for.
The table's flushes/pass column gives, per variant, that pass's flushes and their mean cost.

With the every-layer variant comes its floor, measured the same way: the bare loop reading each
gradient once after the backward pass (a dot product each, nothing recorded). No recording of
every layer's gradient norm can cost less; the line under the table says how far above it the
every-layer variant is.

Targets, per step, on the MLP and on the custom model alike: <= 1.03x for every layer's norm at
every step, <= 1.05x for the defaults (norms every 10 steps, diagnostics every 50), <= 1.25x with
every signal at every step (histograms every 10; the last row shows what drawing them at every
step too costs). On the ResNet and the Transformer: <= 1.05x, <= 1.1x and <= 1.5x.
"""

import argparse
import math
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from gradexp.config import CONFIG_DIR
from gradexp.config.validate import validate
from gradexp.engine import Batches, Run, build_run, train, train_step
from gradexp.models import build_model
from gradexp.optim import OPTIMIZERS
from gradexp.precision import Precision
from gradexp.recorder import FLUSH_SECONDS
from gradexp.tasks import build_task

PRECISION_TITLES = {"32": "", "bf16": ", bf16 autocast", "fp16": ", fp16 autocast with a dynamic loss scale"}
FIXED_REPEATS = 15  # one-step runs are short: more of them (--fixed-repeats)
CUSTOM_TARGET = "custom_model.ResidualTower"  # benchmarks/ is sys.path[0] when run as a script

BARE = "bare PyTorch loop"
DEFAULTS = "gradexp defaults (norms every 10, diagnostics every 50)"
NO_FIGURES = "gradexp defaults without the end-of-run figures"
FLOOR = "floor: the bare loop reading every gradient once"
EVERY_LAYER = "gradexp, every layer's norm every step, no diagnostics"
EVERY_SIGNAL = "gradexp, every signal every step, histograms every 10"
EVERY_HISTOGRAM = "gradexp, diagnostics=full (histograms every step too)"
VARIANTS = {  # each variant's overrides on top of the model's
    BARE: [],
    DEFAULTS: [],
    NO_FIGURES: ["diagnostics.figures=false"],
    FLOOR: [],
    EVERY_LAYER: ["trainer.log_every=1", "diagnostics=off"],
    EVERY_SIGNAL: ["trainer.log_every=1", "diagnostics=full", "diagnostics.histograms_every=10"],
    EVERY_HISTOGRAM: ["trainer.log_every=1", "diagnostics=full"],
}
SHORT = {  # each gradexp variant's name in the line of what it left to the next step
    DEFAULTS: "defaults",
    NO_FIGURES: "defaults without figures",
    FLOOR: "floor",
    EVERY_LAYER: "every layer",
    EVERY_SIGNAL: "every signal",
    EVERY_HISTOGRAM: "every histogram",
}


def bare_loop(cfg, read_gradients: bool = False) -> None:
    """What a researcher would write by hand: no recording, the same work otherwise.
    `read_gradients`: each step also reads every gradient once (the floor)."""
    c = validate(cfg)
    t = c.trainer
    torch.manual_seed(t.seed)
    task = build_task(c.task, t.seed)
    model = build_model(c, task)
    optimizer = OPTIMIZERS[c.optimizer.name](model.parameters(), c.optimizer)
    batches = Batches(task, t.batch_size, t.seed)
    precision = Precision(t.precision, t.loss_scale, torch.device("cpu"))
    after_backward = every_gradient_read(model) if read_gradients else None
    for step in range(t.steps):
        bare_update(model, optimizer, task, batches, step % t.eval_every == 0, precision, after_backward)
    validate_once(model, task, precision)  # the final evaluation


def floor_loop(cfg) -> None:
    bare_loop(cfg, read_gradients=True)


def bare_step(run: Run, step: int, after_backward: Callable[[], object] | None = None) -> None:
    """The bare loop's step, on a gradexp run's own model, optimizer and batches."""
    evaluate = step % run.config.trainer.eval_every == 0
    bare_update(run.model, run.optimizer, run.task, run.batches, evaluate, run.precision, after_backward)


def bare_update(
    model,
    optimizer,
    task,
    batches: Batches,
    evaluate: bool,
    precision: Precision,
    after_backward: Callable[[], object] | None = None,
) -> None:
    """One step of the bare loop: the validation loss when due, then an update (under autocast
    and with a GradScaler where the precision asks for them). `after_backward`: called between
    the backward pass and the update."""
    if evaluate:
        validate_once(model, task, precision)
    optimizer.zero_grad(set_to_none=True)
    x, y = batches.next()
    with precision.autocast():
        loss = cross_entropy(model(x), y)
    precision.scale(loss).backward()
    if after_backward is not None:
        after_backward()
    precision.step(optimizer)


def every_gradient_read(model) -> Callable[[], torch.Tensor]:
    """The floor of every layer's norm: each gradient read once, as the sum of its squares (a
    dot product of the flattened gradient with itself, the cheapest such pass on a CPU), stacked
    and left on the device. No range check, no square root, nothing recorded."""
    params = [p for p in model.parameters() if p.requires_grad]

    def read() -> torch.Tensor:
        return torch.stack(
            [torch.dot(g, g) for g in (p.grad.flatten() for p in params if p.grad is not None)]
        )

    return read


def cross_entropy(output, target):
    """Per example, or per position of a sequence (the Transformer's next-token logits)."""
    return F.cross_entropy(output.flatten(0, -2), target.flatten())


@torch.no_grad()
def validate_once(model, task, precision: Precision) -> None:
    model.eval()
    with precision.autocast():
        output = model(task.x_val)
    cross_entropy(output.float(), task.y_val).item()
    model.train()


class FlushTimer:
    """Times a run's flushes (the recorder's copy to the host, then the sinks' writes) and
    decides when they are due on the recorded steps' own clock: the recorder's wall clock would
    also run through the bare steps alternated with them, and flush about half as often as a run.
    It stands in for the run's recorder.flush, recorder.due and each sink's write."""

    def __init__(self, run: Run):
        self._flush = run.recorder.flush
        run.recorder.flush, run.recorder.due = self.flush, self.due
        for sink in run.sinks:
            sink.write = self._timed(sink.write)
        self.seconds, self.count = 0.0, 0  # time spent flushing and flushes, this pass
        self._since_flush = self._step_start = 0.0  # recorded time since the last flush

    def start_pass(self) -> None:
        """A pass starts as a run does: nothing flushed yet, a second to go to the first flush."""
        self.seconds, self.count, self._since_flush = 0.0, 0, 0.0

    def start_step(self) -> float:
        self._step_start = time.perf_counter()
        return self._step_start

    def end_step(self) -> float:
        end = time.perf_counter()
        self._since_flush += end - self._step_start
        return end

    def due(self) -> bool:
        return self._since_flush + time.perf_counter() - self._step_start >= FLUSH_SECONDS

    def flush(self):
        """The recorder's flush, timed; like the recorder's own clock, the next interval starts
        when a flush does."""
        start = self._step_start = time.perf_counter()
        self._since_flush = 0.0
        self.count += 1
        records = self._flush()
        self.seconds += time.perf_counter() - start
        return records

    def _timed(self, write):
        def timed(records) -> None:
            start = time.perf_counter()
            write(records)
            self.seconds += time.perf_counter() - start

        return timed


@dataclass
class PerStep:
    """A variant's per-step figure and the flushes it includes."""

    ratio: float  # recorded steps with their flushes, and what they left to the next, over bare steps
    flushes: int  # the median pass's flushes
    flush_seconds: float  # their mean cost (0 without flushes)
    left_behind: float  # what the recorded steps left to the steps after them, as a share of a bare step


def step_ratio(cfg, passes: int, floor: bool = False) -> PerStep:
    """Recorded steps over bare steps, alternated on the same model in one process, so that the
    machine's drift over seconds hits both alike: the per-step cost of recording, flushes
    included, without the run's fixed costs. Steps 0 to steps - 1 are recorded, so every
    interval comes round as often as in a real run; each step's time is the least over `passes`
    passes, which drops the stalls a neighbour causes (noise only ever adds time).

    Each recorded step is followed by two bare steps: the first pays whatever the recorded step
    left to the next one (memory handed back to the system and faulted in again, caches it
    filled with its own data), the second, after a bare step, is the baseline; the difference
    between the two is charged to the recorded step. The minimum leaves out the flush inside
    the step, which lands on other steps in other passes; what each pass spent flushing is
    timed apart, and the median pass's is added back.

    `floor`: the recorded step is the floor's instead, a bare step that reads every gradient
    once (`every_gradient_read`), timed the same way."""
    steps = cfg.trainer.steps
    recorded, after_recorded, bare = [math.inf] * steps, [math.inf] * steps, [math.inf] * steps
    flushed = []  # (seconds, flushes) per pass
    with tempfile.TemporaryDirectory() as run_dir:
        run = build_run(validate(cfg), Path(run_dir), False, time.perf_counter(), None)
        timer = FlushTimer(run)
        read = every_gradient_read(run.model) if floor else None
        for _ in range(passes):
            timer.start_pass()
            spent = 0.0  # in recorded steps, this pass
            for step in range(steps):
                flushing = timer.seconds
                start = timer.start_step()
                if floor:
                    bare_step(run, step, read)
                else:
                    train_step(run, step)
                middle = timer.end_step()
                bare_step(run, step)  # pays what the recorded step left behind
                after = time.perf_counter()
                bare_step(run, step)  # after a bare step: the baseline
                end = time.perf_counter()
                spent += middle - start
                recorded[step] = min(recorded[step], middle - start - (timer.seconds - flushing))
                after_recorded[step] = min(after_recorded[step], after - middle)
                bare[step] = min(bare[step], end - after)
            if not floor:  # the floor records nothing, so it has nothing to flush
                if timer.count == 0 and spent > 2 * FLUSH_SECONDS:
                    raise RuntimeError("no flush went through the timer: has the engine's flush moved?")
                records = run.recorder.flush()  # what is pending at the end, as a run's close
                for sink in run.sinks:
                    sink.write(records)
            flushed.append((timer.seconds, timer.count))
        for sink in run.sinks:
            sink.close()
    seconds, count = sorted(flushed)[(passes - 1) // 2]  # the median pass (the lower of two)
    left_behind = sum(after_recorded) - sum(bare)
    return PerStep(
        (sum(recorded) + left_behind + seconds) / sum(bare),
        count,
        seconds / count if count else 0.0,
        left_behind / sum(bare),
    )


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


def compose_variants(base: list[str], only: list[str] | None = None) -> tuple[dict, dict]:
    """Every variant's (function, config), and the first three cut to one step: what a run
    costs whatever its length. `only`: the bare loop, the defaults and the variants whose names
    contain one of these (and the floor with the every-layer variant). Call inside Hydra's
    initialize_config_dir."""

    def chosen(name: str) -> bool:
        if only is None or name in (BARE, DEFAULTS, NO_FIGURES):
            return True
        return any(part in name for part in only) or (name == FLOOR and chosen(EVERY_LAYER))

    loops = {BARE: bare_loop, FLOOR: floor_loop}
    configs = {
        name: (loops.get(name, gradexp_run), compose("config", overrides=[*base, *extra]))
        for name, extra in VARIANTS.items()
        if chosen(name)
    }
    one_step = {
        name: (configs[name][0], compose("config", overrides=[*base, *VARIANTS[name], "trainer.steps=1"]))
        for name in (BARE, DEFAULTS, NO_FIGURES)
    }
    return configs, one_step


def benchmark(title: str, configs: dict, one_step: dict, args) -> None:
    """Measure one model's variants and print its table, against its own bare loop."""
    times = alternate(configs, args.repeats)
    fixed = alternate(one_step, args.fixed_repeats)
    per_step = {
        name: step_ratio(cfg, args.passes, floor=name == FLOOR)
        for name, (_, cfg) in configs.items()
        if name != BARE
    }

    print(
        f"{title}, batch {args.batch_size}, {args.steps} steps, adam, CPU with "
        f"{torch.get_num_threads()} threads; median of {args.repeats} alternated runs"
    )
    fastest_bare = min(times[BARE])
    print(
        f"  {'':<58} {'median':>9}  {'ratio':>8}  {'fastest':>8}  {'per step':>8}  "
        f"{'flushes/pass':>16}  per-repeat ratios"
    )
    for name in configs:
        # each repeat's ratio pairs runs made back to back, so slow drift of the machine cancels;
        # the fastest runs' ratio discards the repeats that a neighbour slowed down (noise only adds)
        ratios = [t / b for t, b in zip(times[name], times[BARE])]
        step = per_step.get(name)
        flushes = f"{step.flushes} x {1000 * step.flush_seconds:.2f} ms" if step and step.flushes else "-"
        print(
            f"  {name:<58} {statistics.median(times[name]):7.3f} s  {statistics.median(ratios):7.3f}x"
            f"  {min(times[name]) / fastest_bare:7.3f}x  {step.ratio if step else 1:7.3f}x"
            f"  {flushes:>16}  {min(ratios):.3f}..{max(ratios):.3f}"
        )
    bare, defaults, no_figures = (statistics.median(fixed[name]) for name in (BARE, DEFAULTS, NO_FIGURES))
    print(
        f"per step: {args.steps} recorded steps, each followed by two bare ones on the same model, "
        f"each step's fastest of {args.passes} passes without the flush inside it, plus what the first "
        f"bare step took more than the second; fixed costs not."
    )
    left = ", ".join(f"{SHORT[name]} {100 * step.left_behind:+.1f}%" for name, step in per_step.items())
    print(f"left to the next step (of a bare step, counted in): {left}.")
    if FLOOR in per_step and EVERY_LAYER in per_step:
        above = per_step[EVERY_LAYER].ratio - per_step[FLOOR].ratio
        print(
            f"every layer's norm above its floor (the bare loop reading every gradient once, a dot "
            f"product each, per step as above): {100 * above:+.1f}% of a bare step."
        )
    default = per_step[DEFAULTS]
    print(
        f"flushes: timed apart and added back, the median pass's total (of {args.passes}), due after "
        f"each {FLUSH_SECONDS:g} s of recorded steps and once at the pass's end, as in a run; the defaults: "
        f"{default.flushes} per pass, {1000 * default.flush_seconds:.2f} ms each."
    )
    print(
        f"fixed cost of a run (the same runs cut to one step, median of {args.fixed_repeats}): the defaults' "
        f"{1000 * (defaults - bare):.0f} ms, {1000 * (defaults - no_figures):.0f} ms of it the figures."
    )
    expected = default.ratio + (defaults - bare) / statistics.median(times[BARE])
    print(f"so a {args.steps}-step run of the defaults: {expected:.3f}x (per step, plus the fixed cost).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["mlp", "custom", "resnet", "transformer", "all"], default="all")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--passes", type=int, default=3, help="passes of the step-by-step comparison")
    parser.add_argument("--depth", type=int, default=20, help="the MLP's hidden layers")
    parser.add_argument("--width", type=int, default=256, help="both models' width")
    parser.add_argument("--custom-depth", type=int, default=8, help="the custom model's residual blocks")
    parser.add_argument("--cnn-depth", type=int, default=20, help="the ResNet's 3x3 convolutions")
    parser.add_argument("--transformer-depth", type=int, default=6, help="the Transformer's blocks")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--fixed-repeats", type=int, default=FIXED_REPEATS, help="one-step runs per variant")
    parser.add_argument("--precision", choices=["32", "bf16", "fp16", "all"], default="32")
    parser.add_argument("--variants", nargs="+", help="only the variants whose names contain one of these")
    args = parser.parse_args()

    common = [f"trainer.steps={args.steps}", f"trainer.batch_size={args.batch_size}", "trainer.device=cpu"]
    models = {
        "mlp": (
            f"MLP depth {args.depth} width {args.width}",
            [f"model.depth={args.depth}", f"model.width={args.width}"],
        ),
        "custom": (
            f"custom model {CUSTOM_TARGET} depth {args.custom_depth} width {args.width}",
            [
                "model=custom",
                f"model._target_={CUSTOM_TARGET}",
                f"+model.width={args.width}",
                f"+model.depth={args.custom_depth}",
                "init=default",
            ],
        ),
        "resnet": (
            f"ResNet depth {args.cnn_depth} channels 16, 16x16 images",
            ["model=cnn", "task=images", f"model.depth={args.cnn_depth}", "model.residual=true"],
        ),
        "transformer": (
            f"Pre-LN Transformer depth {args.transformer_depth} d_model 64, 32 tokens",
            ["model=transformer", "task=tokens", f"model.depth={args.transformer_depth}"],
        ),
    }
    chosen = list(models) if args.model == "all" else [args.model]
    precisions = ["32", "bf16", "fp16"] if args.precision == "all" else [args.precision]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        suites = {
            (model, precision): compose_variants(
                [*models[model][1], *common, f"trainer.precision={precision}"], args.variants
            )
            for model in chosen
            for precision in precisions
        }
    for i, ((model, precision), suite) in enumerate(suites.items()):
        if i:
            print()
        benchmark(models[model][0] + PRECISION_TITLES[precision], *suite, args)


if __name__ == "__main__":
    main()
