"""What does recording cost in a user's own loop? `gradexp.watch` beside wandb.watch and
Lightning's `grad_norm`, on the same model, data and optimizer, in one process.

    python benchmarks/watch_overhead.py [--model {mlp,resnet,transformer,all}] [--steps 300]
        [--repeats 3] [--batch-size 128]

Plain-loop variants (a bare loop; gradexp.watch with every layer's norm every step; its
defaults; wandb.watch(log="all") with log_freq 1 and 100, offline, where wandb is installed)
each train their own copy of the model, and their steps are alternated one by one, in a new
order each round, so that a machine whose speed drifts hits them alike. A variant's figure is
its total time over the steps (flushes, histograms and wandb's uploads to its offline files
included; close(), which writes the summary and draws the figures, is shown apart) over the
bare loop's. Lightning (where installed) runs whole `Trainer.fit`s, alternated
with each other: plain, with `grad_norm` logged every step (`self.log_dict` in
`on_before_optimizer_step`, Lightning's documented recipe) and with gradexp's callback; a
Lightning step is timed from one batch's start to the next, and its figure is against plain
Lightning (the cost of the recording) and against the bare loop (the cost of Lightning too).

Targets, per step against the bare loop: gradexp.watch with every layer's norm every step at
most 1.05x, its defaults at most 1.1x.
"""

import argparse
import copy
import logging
import os
import random
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

import gradexp
from gradexp.config import CONFIG_DIR
from gradexp.config.validate import validate
from gradexp.engine import Batches
from gradexp.models import build_model
from gradexp.tasks import build_task

MODELS = {
    "mlp": ("MLP depth 20 width 256", ["model.depth=20", "model.width=256"]),
    "resnet": (  # without its BatchNorm, SGD at lr 0.01 blows this ResNet up at once: no model to time
        "ResNet depth 20 channels 16 with BatchNorm, 16x16 images",
        ["model=cnn", "task=images", "model.depth=20", "model.residual=true", "norm=batchnorm"],
    ),
    "transformer": ("Pre-LN Transformer depth 6 d_model 64, 32 tokens", ["model=transformer", "task=tokens"]),
}
BARE = "bare PyTorch loop"


def loss_of(output, target):
    """Per example, or per position of a sequence (the Transformer's next-token logits)."""
    return F.cross_entropy(output.flatten(0, -2), target.flatten())


class Loop:
    """One variant of the user's loop: its own model copy, optimizer and batches."""

    def __init__(self, name: str, model, task, batch_size: int, lr: float, folder: Path):
        self.name, self.model, self.task = name, copy.deepcopy(model), task
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=lr, momentum=0.9)
        self.batches = Batches(task, batch_size, seed=0)
        self.monitor, self.wandb_run = None, None
        self.seconds = self.closing = 0.0  # in the steps, and in close() (summary, figures)
        self.losses: list[torch.Tensor] = []  # the first and the latest: does the model train?
        if name.startswith("gradexp.watch"):
            options = {"log_every": 1, "diagnostics_every": None, "histograms_every": None, "figures": False}
            self.monitor = gradexp.watch(
                self.model,
                self.optimizer,
                folder / name,
                report=False,
                **({} if "defaults" in name else options),
            )
        if name.startswith("wandb.watch"):  # one offline wandb run per repeat, a model each
            import wandb

            self.wandb_run = wandb.run or wandb.init(mode="offline", dir=str(folder))
            wandb.watch(self.model, log="all", log_freq=int(name.rsplit(" ", 1)[1]))

    def step(self) -> None:
        start = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        x, y = self.batches.next()
        loss = loss_of(self.model(x), y)
        self.losses[1:] = [loss.detach()]  # no host sync: read once the steps are timed
        loss.backward()
        if self.monitor is not None:
            self.monitor.step(loss)
        if self.wandb_run is not None:
            self.wandb_run.log({f"loss {self.name}": loss.item()})
        self.optimizer.step()
        self.seconds += time.perf_counter() - start

    def close(self) -> None:
        if self.monitor is not None:
            start = time.perf_counter()
            self.monitor.close()
            self.closing = time.perf_counter() - start


def plain_loops(model, task, args, folder: Path) -> dict[str, list[tuple[float, float]]]:
    """Per repeat, each variant's (time in its steps over the bare loop's, seconds in close).
    gradexp's variants are alternated with a bare loop, and wandb's with another: wandb writes
    through a service process of its own, which would take a core from whatever ran beside it.
    The bare loop's first and last losses are printed: a model that diverged or died would time
    NaN arithmetic and zero gradients, not training."""
    groups = [[BARE, "gradexp.watch, every layer's norm every step", "gradexp.watch defaults"]]
    if _installed("wandb"):
        os.environ.setdefault("WANDB_SILENT", "true")
        groups.append([BARE, "wandb.watch log='all' log_freq 1", "wandb.watch log='all' log_freq 100"])
    ratios: dict[str, list[tuple[float, float]]] = {}
    for names in groups:
        for name, found in alternated(names, model, task, args, folder).items():
            ratios.setdefault(name, []).extend(found)
    return ratios


def alternated(names: list[str], model, task, args, folder: Path) -> dict[str, list[tuple[float, float]]]:
    ratios: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for repeat in range(args.repeats):
        loops = [Loop(name, model, task, args.batch_size, args.lr, folder / str(repeat)) for name in names]
        for loop in loops:  # warm-up: the first steps allocate
            for _ in range(3):
                loop.step()
            loop.seconds = 0.0
        order = list(loops)
        for _ in range(args.steps):
            random.shuffle(order)
            for loop in order:
                loop.step()
        for loop in loops:
            loop.close()
        if any(loop.wandb_run for loop in loops):
            loops[-1].wandb_run.finish()
        for loop in loops:
            ratios[loop.name].append((loop.seconds / loops[0].seconds, loop.closing))
        if repeat == 0 and names[1].startswith("gradexp"):  # once per model
            first, last = (float(loss) for loss in loops[0].losses)
            print(f"  the bare loop's training loss: {first:.3g} at its first step, {last:.3g} at its last")
    return ratios


def lightning_fits(model, task, args, folder: Path) -> dict[str, list[float]]:
    """Per repeat, each Lightning variant's median step over plain Lightning's, and over the
    bare loop's median step measured in the same repeat."""
    import lightning.pytorch as pl
    from lightning.pytorch.utilities import grad_norm

    from gradexp.integrations.lightning import GradexpCallback

    class Module(pl.LightningModule):
        def __init__(self, net, log_norms: bool):
            super().__init__()
            self.net, self.log_norms = copy.deepcopy(net), log_norms

        def training_step(self, batch, batch_idx):
            x, y = batch
            return loss_of(self.net(x), y)

        def on_before_optimizer_step(self, optimizer):
            if self.log_norms:
                self.log_dict(grad_norm(self, norm_type=2))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=args.lr, momentum=0.9)

    class Clock(pl.Callback):
        def __init__(self):
            self.starts = []

        def on_train_batch_start(self, *_):
            self.starts.append(time.perf_counter())

        def steps(self) -> list[float]:
            return [b - a for a, b in zip(self.starts[3:], self.starts[4:])]  # after 3 warm-up steps

    class Batched(torch.utils.data.IterableDataset):
        """The bare loop's batches, whole: no per-example collation in Lightning's loop."""

        def __iter__(self):
            batches = Batches(task, args.batch_size, seed=0)
            return (batches.next() for _ in range(args.steps + 1))

    variants = {
        "Lightning, plain": (False, False),
        "Lightning + grad_norm logged every step": (True, False),
        "Lightning + GradexpCallback, every layer's norm every step": (False, True),
    }
    per_step: dict[str, list[float]] = {name: [] for name in variants}
    bare: list[float] = []
    for repeat in range(args.repeats):
        for name, (log_norms, callback) in random.sample(list(variants.items()), len(variants)):
            clock = Clock()
            callbacks = [clock]
            if callback:
                options = {
                    "log_every": 1,
                    "diagnostics_every": None,
                    "histograms_every": None,
                    "figures": False,
                }
                callbacks.append(GradexpCallback(folder / f"lightning{repeat}", report=False, **options))
            trainer = pl.Trainer(
                max_steps=args.steps,
                accelerator="cpu",
                callbacks=callbacks,
                logger=pl.loggers.CSVLogger(folder / "csv") if log_norms else False,
                log_every_n_steps=1,
                enable_checkpointing=False,
                enable_progress_bar=False,
                enable_model_summary=False,
            )
            trainer.fit(Module(model, log_norms), torch.utils.data.DataLoader(Batched(), batch_size=None))
            per_step[name].append(statistics.median(clock.steps()))
        loop = Loop(BARE, model, task, args.batch_size, args.lr, folder)
        times = []
        for _ in range(args.steps):
            before = loop.seconds
            loop.step()
            times.append(loop.seconds - before)
        bare.append(statistics.median(times[3:]))
    plain = per_step["Lightning, plain"]
    return {name: [(t / p, t / b) for t, p, b in zip(times, plain, bare)] for name, times in per_step.items()}


def _installed(name: str) -> bool:
    try:
        __import__(name)
        return True
    except ImportError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=[*MODELS, "all"], default="all")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--no-lightning", action="store_true", help="skip the Lightning fits")
    args = parser.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    chosen = list(MODELS) if args.model == "all" else [args.model]
    for key in chosen:
        title, overrides = MODELS[key]
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            config = validate(compose("config", overrides=[*overrides, "trainer.device=cpu"]))
        torch.manual_seed(0)
        task = build_task(config.task, 0)
        model = build_model(config, task)
        print(f"\n{title}: {args.steps} steps x {args.repeats} repeats, batch {args.batch_size}")
        with tempfile.TemporaryDirectory() as tmp:
            for name, pairs in plain_loops(model, task, args, Path(tmp)).items():
                ratios = [r for r, _ in pairs]
                figures = " ".join(f"{r:.3f}" for r in ratios)
                closing = statistics.median(c for _, c in pairs)
                shown = f", close {closing:.2f} s" if closing else ""
                ratio = statistics.median(ratios)
                print(f"  {name:<58} {ratio:6.3f}x the bare loop (repeats: {figures}{shown})")
            if _installed("lightning") and not args.no_lightning:
                for name, pairs in lightning_fits(model, task, args, Path(tmp)).items():
                    over_plain = statistics.median(p for p, _ in pairs)
                    over_bare = statistics.median(b for _, b in pairs)
                    print(f"  {name:<58} {over_plain:6.3f}x plain Lightning, {over_bare:6.3f}x the bare loop")


if __name__ == "__main__":
    main()
