"""The sweep report's training-loss and per-block figures, drawn from real sweeps' files: a sweep
of a model with repeated blocks, and one of gradexp's MLP with a job that diverges."""

import math
import shutil
import struct
from pathlib import Path

import pytest
from PIL import Image

from gradexp.diagnostics.figures import subplots
from gradexp.sweeps import figures
from gradexp.sweeps.table import Job, build
from tests.conftest import TINY, read_scalars, read_summary, run_cli

NETWORKS = Path(__file__).with_name("networks.py")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TRANSFORMER = [
    "model=custom",
    "model._target_=networks.TinyTransformer",
    "trainer.steps=6",
    "trainer.batch_size=32",
    "task.n_train=256",
    "task.n_val=128",
    "trainer.log_every=2",
    "diagnostics.figures=false",  # the runs' own figures: not what is tested here
]


@pytest.fixture(scope="module")
def block_sweep(tmp_path_factory) -> Path:
    """Two Pre-LN Transformers of 2 and 4 blocks."""
    tmp_path = tmp_path_factory.mktemp("blocks")
    shutil.copy(NETWORKS, tmp_path)
    result = run_cli(
        "-m",
        *TRANSFORMER,
        "+model.depth=2,4",
        "hydra.sweep.dir=sweep",
        cwd=tmp_path,
        module=False,  # the console script: the working directory is not on its sys.path
    )
    assert result.returncode == 0, result.stderr
    assert "2 jobs: 2 completed" in result.stdout
    return tmp_path / "sweep"


@pytest.fixture(scope="module")
def mlp_sweep(tmp_path_factory) -> Path:
    """gradexp's MLP (no blocks) at a learning rate that trains and one that diverges."""
    tmp_path = tmp_path_factory.mktemp("mlp")
    result = run_cli(
        "-m",
        *TINY,
        "optimizer=sgd",
        "optimizer.lr=0.05,1e6",
        "diagnostics.figures=false",
        "hydra.sweep.dir=sweep",
        cwd=tmp_path,
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert "2 jobs: 1 completed, 1 diverged" in result.stdout
    return tmp_path / "sweep"


def assert_png(path: Path) -> None:
    """A whole, decodable PNG of a figure's size (the IHDR chunk's width and height)."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert 200 <= width <= 4000 and 200 <= height <= 4000, (width, height)
    with Image.open(path) as image:
        image.verify()  # every chunk's checksum
    with Image.open(path) as image:
        assert image.size == (width, height)
        image.load()  # the pixels decompress


def jobs(sweep: Path) -> list[Path]:
    return sorted(p.parent for p in sweep.glob("*/summary.json"))


def test_a_sweep_of_models_with_blocks_draws_both_figures(block_sweep):
    for name in ("block_norm_vs_depth", "training_loss"):
        assert_png(block_sweep / "report" / f"{name}.png")


def test_the_block_figure_has_one_point_per_block_so_the_deeper_job_reaches_further(block_sweep):
    table = build(block_sweep)
    norms = [job.summary["block_grad_norm_first"] for job in table.jobs]
    assert [len(n) for n in norms] == [2, 4]
    assert [figures._block_norms(job) for job in table.jobs] == [list(n.values()) for n in norms]
    assert all(math.isfinite(v) and v > 0 for n in norms for v in n.values())  # on a log axis
    assert figures.block_norm_vs_depth(table)[:8] == PNG_SIGNATURE


def test_an_mlp_sweep_draws_the_training_loss_and_no_block_figure(mlp_sweep):
    assert_png(mlp_sweep / "report" / "training_loss.png")
    assert_png(mlp_sweep / "report" / "norm_vs_depth.png")
    assert not (mlp_sweep / "report" / "block_norm_vs_depth.png").exists()
    assert figures.block_norm_vs_depth(build(mlp_sweep)) is None


def test_a_diverged_jobs_loss_curve_stops_at_its_last_finite_value_and_says_so(mlp_sweep):
    table = build(mlp_sweep)
    curves = {job.status: (job, steps, values) for job, steps, values in figures.loss_curves(table)}
    assert set(curves) == {"completed", "diverged"}
    job, steps, values = curves["completed"]
    assert steps == list(range(20)) and figures.status_label(job, table) == "optimizer.lr=0.05"
    job, steps, values = curves["diverged"]
    logged = read_scalars(job.path)["loss/train"]
    diverged_at = job.summary["diverged_step"]
    assert not math.isfinite(logged[diverged_at])  # the non-finite loss is in the files, not the curve
    assert steps == [s for s in sorted(logged) if s < diverged_at] and all(map(math.isfinite, values))
    assert figures.status_label(job, table) == f"optimizer.lr={job.overrides['optimizer.lr']} (diverged)"


def test_the_series_reader_reads_what_tensorboard_reads(mlp_sweep):
    for run in jobs(mlp_sweep):
        expected = read_scalars(run)  # TensorBoard's EventAccumulator, every value kept
        series = figures.read_series(run, set(expected).__contains__)
        assert set(series) == set(expected)
        for tag, points in expected.items():
            assert list(series[tag]) == sorted(points), tag
            got = [series[tag][s] for s in sorted(points)]
            want = [points[s] for s in sorted(points)]
            assert got == pytest.approx(want, nan_ok=True, rel=0, abs=0), tag
    completed = next(r for r in jobs(mlp_sweep) if read_summary(r)["status"] == "completed")
    loss = figures.read_series(completed, lambda tag: tag == "loss/train")["loss/train"]
    assert max(loss) == read_summary(completed)["steps_completed"] - 1  # up to the run's last step


def test_the_norm_history_read_through_the_series_reader_is_unchanged(mlp_sweep):
    run = jobs(mlp_sweep)[0]
    scalars = read_scalars(run)
    layers, steps, rows = figures.read_norm_history(run)
    assert layers == read_summary(run)["layers"] and "total" not in layers
    assert steps == sorted(scalars[f"grad_norm/{layers[0]}"])
    for step, row in zip(steps, rows):
        assert row == [scalars[f"grad_norm/{layer}"][step] for layer in layers]


def loss_axis(*curves: tuple[str, list[float]]) -> tuple[str, tuple[float, float]]:
    """The y scale and limits the training-loss figure gives jobs of these (status, values)."""
    _, ax = subplots()
    jobs = [
        (Job(Path(str(i)), str(i), status, {}), list(range(len(v))), v)
        for i, (status, v) in enumerate(curves)
    ]
    for _, steps, values in jobs:
        ax.plot(steps, values)
    figures._loss_axis(ax, jobs)
    return ax.get_yscale(), ax.get_ylim()


def test_the_loss_axis_is_log_only_for_positive_losses_spanning_more_than_a_decade():
    assert loss_axis(("completed", [2.3, 0.5]))[0] == "linear"
    assert loss_axis(("completed", [2.3, 0.1]))[0] == "log"
    assert loss_axis(("completed", [2.3, 0.0]), ("completed", [3.0, 0.01]))[0] == "linear"
    assert loss_axis(("completed", [5.0, -1.0]))[0] == "linear"  # a loss of one's own can be negative


def test_a_diverged_jobs_blow_up_goes_off_the_top_instead_of_flattening_the_others():
    scale, (low, high) = loss_axis(("completed", [2.3, 1.0, 0.5]), ("diverged", [2.3, 1e22]))
    assert scale == "linear" and 0.3 < low < 0.5 and 2.3 < high < 2.5
    scale, (low, high) = loss_axis(("completed", [2.3, 0.01]), ("diverged", [2.3, 1e22]))
    assert scale == "log" and 0.005 < low < 0.01 and 2.3 < high < 5
    scale, (low, high) = loss_axis(("diverged", [2.3, 1e22]))  # nothing else to show
    assert scale == "log" and high >= 1e22
