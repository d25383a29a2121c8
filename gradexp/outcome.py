"""What a run leaves when it ends, whoever ran its loop (gradexp's engine or `gradexp.watch` in a
user's own): the keys of summary.json and the figures. One function each, so a CLI run and a
watched run have the same keys, read by the same report, sweep and TensorBoard tools."""

import shutil
import sys
import time
from pathlib import Path

import torch

import gradexp
from gradexp import distributed
from gradexp.diagnostics import report
from gradexp.network import Network
from gradexp.precision import COLLAPSED_BELOW
from gradexp.provenance import provenance
from gradexp.recorder import GradientRecorder
from gradexp.run_files import FIGURE_DATA, RUN_FIGURES
from gradexp.sinks.base import Sink


def summary(
    *,
    status: str,
    error: str | None,
    recorder: GradientRecorder | None,
    network: Network | None,
    steps_completed: int,
    started: float,
    device: torch.device | None,
    overrides: list[str],
    config: dict,
    final: dict[str, float],
    depth_axis: str | None = None,
    loss_floor: float | None = None,
    precision: tuple[str | None, str | float | None] = (None, None),
    deterministic: bool = False,
    prediction: dict | None = None,
    not_measured: dict[str, str] | None = None,
) -> dict:
    """summary.json's keys. `recorder` and `network` are None for a run that failed before it
    was built; `final` holds the final metrics (loss/train, loss/val, acc/val) there are;
    `precision` is (its name, its loss scale)."""
    _, first_norms = recorder.logged_norms(0) if recorder else (None, {})
    last_step, last_norms = recorder.logged_norms(-1) if recorder else (None, {})
    divergence = recorder.divergence if recorder else None
    model = network.model if network else None
    processes = distributed.current().size
    return {
        "status": status,
        "overrides": overrides,
        "steps_completed": divergence.step if divergence else steps_completed,
        "last_recorded_step": last_step,
        "layers": recorder.layer_names if recorder else [],
        "blocks": recorder.block_names if recorder else [],
        "grad_norm_first": first_norms,
        "grad_norm_last": last_norms,
        "grad_ratio_first_last": _first_over_last(last_norms),
        "depth_axis": depth_axis,
        "initial_val_loss": recorder.first_values.get("loss/val") if recorder else None,
        "final_train_loss": final.get("loss/train"),
        "final_val_loss": final.get("loss/val"),
        "final_val_acc": final.get("acc/val"),
        "loss_floor": loss_floor,
        **_precision_summary(recorder, *precision),
        "diverged_step": divergence.step if divergence else None,
        "first_nonfinite_layer": divergence.first_nonfinite_layer if divergence else None,
        "error": error,
        "wall_time_s": round(time.perf_counter() - started, 3),
        "device": str(device) if device else None,
        "processes": processes,  # that trained the run together (torchrun); each on its own device
        "torch_threads": torch.get_num_threads(),
        "cuda_peak_memory_mb": _cuda_peak_mb(device),
        "num_params": sum(p.numel() for p in model.parameters()) if model is not None else None,
        "gradexp_version": gradexp.__version__,
        "provenance": provenance(overrides, device, deterministic, processes),
        **(report.summarize(network, recorder, prediction or {}) if recorder and network else {}),
        "not_measured": not_measured or {},
        "config": config,
    }


def end_figures(recorder: GradientRecorder, run_dir: Path, sinks: list[Sink], now: bool = True) -> None:
    """The end-of-run figures: drawn now, or (`now=False`, a sweep's job) left for later, with
    what they are drawn from saved for `gradexp-report <run dir>` to draw. Figures an earlier
    attempt left (gradexp-report on a job since resumed) are removed with it: they are stale,
    and gradexp-report draws a job's figures only where there are none."""
    data = report.FigureData.of(recorder)
    if now:
        try:
            draw_figures(data, run_dir, sinks)
        except Exception as error:  # noqa: BLE001 (the summary comes next: a figure must not cost it)
            print(
                f"gradexp: the end-of-run figures were not drawn: {type(error).__name__}: {error}",
                file=sys.stderr,
            )
    elif data.norm_history or data.vector_history:
        shutil.rmtree(run_dir / RUN_FIGURES, ignore_errors=True)
        data.save(run_dir / FIGURE_DATA)


def forget_figure_data(run_dir: Path) -> None:
    """A new attempt at a run (a sweep's job run again, or resumed) makes the figure data an
    earlier one saved stale: removed as it starts, so that an attempt that fails before its end
    leaves none for gradexp-report to draw."""
    (run_dir / FIGURE_DATA).unlink(missing_ok=True)


def draw_figures(data: report.FigureData, run_dir: Path, sinks: list[Sink]) -> list[str]:
    """The figures into run_dir/figures/ and TensorBoard's Images tab; their names."""
    images = report.draw(data)
    if not images:
        return []
    folder = run_dir / RUN_FIGURES
    folder.mkdir(exist_ok=True)
    for name, png in images.items():
        (folder / f"{name}.png").write_bytes(png)
    for sink in sinks:
        sink.write_images(data.last_step, images)
    return list(images)


def _precision_summary(recorder: GradientRecorder | None, name: str | None, loss_scale) -> dict:
    """The precision, and for a loss scale how many steps it skipped, its last value and whether
    it collapsed: below 1 (where it shrinks the gradient) with the last steps all skipped. The
    amp_ keys are null without a loss scale."""
    keys = ("amp_skipped_steps", "amp_skipped_in_a_row_at_end", "amp_scale_last", "amp_scale_collapsed")
    summary = {"precision": name, "loss_scale": loss_scale, **dict.fromkeys(keys)}
    if recorder is not None and recorder.scaling:
        collapsed = recorder.scale_last is not None and recorder.scale_last < COLLAPSED_BELOW
        values = (recorder.skipped_steps, recorder.skipped_in_a_row, recorder.scale_last)
        summary |= dict(zip(keys, (*values, bool(collapsed and recorder.skipped_in_a_row > 0))))
    return summary


def _first_over_last(norms: dict[str, float]) -> float | None:
    """The first layer's gradient norm over the last layer's: far below 1, the gradient vanishes
    on its way to the input; far above, it explodes."""
    values = list(norms.values())
    if len(values) < 2 or values[-1] is None or values[0] is None or values[-1] == 0:
        return None
    return values[0] / values[-1]


def _cuda_peak_mb(device: torch.device | None) -> float | None:
    if device is None or device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
