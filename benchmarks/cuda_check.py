"""Does gradexp train on CUDA without making the host wait for the GPU between flushes?

Runs real gradexp runs on `cuda` step by step under `torch.cuda.set_sync_debug_mode("warn")`,
which warns at every operation that synchronizes the host with the device (`.item()`, `.cpu()`,
a data-dependent shape, a blocking copy). A flush (about once a second) is the one place allowed
to synchronize; any other step that does is reported with the line of code that did it.

    python benchmarks/cuda_check.py [--steps 300]

Exits 1 when a step synchronized outside a flush, or a run did not complete on the GPU. One
sync is PyTorch's own and is listed apart: with a loss scale, `GradScaler.step` reads on the host
whether the gradient overflowed (every fp16 loop does, unless its optimizer is fused).
"""

import argparse
import collections
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from gradexp.config import CONFIG_DIR
from gradexp.config.validate import validate
from gradexp.engine import build_run, train, train_step

SCALER_FILE = "grad_scaler.py"  # torch.amp's GradScaler: its step syncs (see the docstring)
VARIANTS = {
    "MLP, defaults": [],
    "MLP, every signal every step": ["diagnostics=full", "trainer.log_every=1"],
    "MLP, batchnorm, clipping by norm and value, grad_accum 2": [
        "norm=batchnorm",
        "trainer.clip.max_norm=1.0",
        "trainer.clip.value=0.5",
        "trainer.grad_accum=2",
        "diagnostics.every=5",
    ],
    "MLP, layernorm, residual, dropout, cosine": [
        "norm=layernorm",
        "model.residual=true",
        "model.dropout=0.1",
        "scheduler=cosine",
        "diagnostics.every=5",
    ],
    "RNN, LSTM on the adding task, every signal": [
        "model=rnn",
        "model.cell=lstm",
        "task=adding",
        "task.seq_len=30",
        "diagnostics=full",
    ],
    "ResNet, batchnorm, every signal": [
        "model=cnn",
        "task=images",
        "model.residual=true",
        "norm=batchnorm",
        "diagnostics=full",
    ],
    "Post-LN Transformer on tokens, warmup and cosine, every signal": [
        "model=transformer",
        "task=tokens",
        "model.norm_position=post",
        "scheduler=cosine",
        "scheduler.warmup_steps=5",
        "diagnostics=full",
    ],
    "RNN (GRU) on tokens, every signal": ["model=rnn", "model.cell=gru", "task=tokens", "diagnostics=full"],
    "custom: tied embeddings, a module called twice, residual blocks, every signal": [
        "model=custom",
        "model._target_=tests.networks.Everything",
        "diagnostics=full",
    ],
    "custom: CNN with in-place SiLU, PReLU and BatchNorm, every signal": [
        "model=custom",
        "model._target_=tests.networks.ConvNet",
        "diagnostics=full",
    ],
    "custom: Transformer with MultiheadAttention, every signal": [
        "model=custom",
        "model._target_=tests.networks.TinyTransformer",
        "diagnostics=full",
    ],
    "MLP in bf16 autocast, every signal": ["trainer.precision=bf16", "diagnostics=full"],
    "MLP in fp16 with a dynamic loss scale, clipping, every signal": [
        "trainer.precision=fp16",
        "trainer.clip.max_norm=1.0",
        "diagnostics=full",
    ],
    "MLP on task=custom data streamed through 2 DataLoader workers, every signal": [
        "task=custom",
        "task._target_=benchmarks.streamed_data.blobs",
        "trainer.workers=2",
        "diagnostics=full",
    ],
    "RNN, vanilla tanh, orthogonal W_hh, clipping": [
        "model=rnn",
        "task=adding",
        "model.recurrent_init=orthogonal",
        "trainer.clip.max_norm=1.0",
        "diagnostics.every=5",
    ],
}


def check_variant(overrides: list[str], steps: int) -> tuple[int, int, collections.Counter]:
    """(steps run, flushes, where a non-flush step synchronized -> count)."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[*overrides, f"trainer.steps={steps}", "trainer.device=cuda"])
    config = validate(cfg)
    offenders: collections.Counter = collections.Counter()
    flushes = 0
    with tempfile.TemporaryDirectory() as run_dir:
        run = build_run(config, Path(run_dir), False, time.perf_counter(), None)
        flush = run.recorder.flush

        def counted_flush():
            nonlocal flushes
            flushes += 1
            return flush()

        run.recorder.flush = counted_flush
        for step in range(steps):
            before = flushes
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")
                try:
                    train_step(run, step)
                finally:
                    torch.cuda.set_sync_debug_mode("default")
            syncs = [w for w in caught if "synchroniz" in str(w.message)]
            if syncs and flushes == before and step > 0:  # step 0 pays CUDA's lazy set-up
                for w in syncs:
                    offenders[f"{Path(w.filename).name}:{w.lineno}"] += 1
        for sink in run.sinks:
            sink.close()
    return steps, flushes, offenders


def whole_run(overrides: list[str], steps: int) -> dict:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[*overrides, f"trainer.steps={steps}", "trainer.device=cuda"])
    with tempfile.TemporaryDirectory() as run_dir:
        return train(cfg, run_dir, show_progress=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        sys.exit(2)
    print(f"{torch.cuda.get_device_name()} | torch {torch.__version__} | CUDA {torch.version.cuda}")
    failed = False
    for name, overrides in VARIANTS.items():
        try:
            steps, flushes, offenders = check_variant(overrides, args.steps)
            summary = whole_run(overrides, args.steps)
        except Exception:  # noqa: BLE001 (report every variant, then fail)
            print(f"FAIL {name}: raised\n{traceback.format_exc()}")
            failed = True
            continue
        scaler = collections.Counter({k: n for k, n in offenders.items() if k.startswith(SCALER_FILE)})
        offenders -= scaler
        ok = not offenders and summary["status"] == "completed" and summary["device"].startswith("cuda")
        failed |= not ok
        print(
            f"{'ok  ' if ok else 'FAIL'} {name}: {steps} steps, {flushes} flushes, "
            f"{sum(offenders.values())} syncs outside a flush; whole run {summary['status']} on "
            f"{summary['device']} in {summary['wall_time_s']:.2f} s, verdict {summary.get('verdict')}, "
            f"peak {summary['cuda_peak_memory_mb']} MB"
        )
        for where, count in offenders.most_common():
            print(f"       {count} x {where}")
        for where, count in scaler.items():
            print(f"       ({count} x {where}: GradScaler.step reading found_inf, PyTorch's own)")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
