"""sweep.seeds: every configuration of a sweep over several seeds, and the table's groups (the
spread over the seeds of each configuration), checked against the jobs' own summaries; a
mistake in it is one line."""

import csv
import json
import math
import statistics
from collections import Counter
from pathlib import Path

import pytest

from gradexp.sweeps.figures import flow_panels
from gradexp.sweeps.table import build
from tests.conftest import TINY, read_scalars, read_summary, run_cli, run_in_process

SPREAD = ("final_train_loss", "final_val_loss", "final_val_acc", "grad_ratio_first_last")


@pytest.fixture(scope="module")
def seeded(tmp_path_factory) -> Path:
    """2 configurations by 3 seeds, one of which diverges at every seed."""
    tmp_path = tmp_path_factory.mktemp("seeds")
    result = run_cli(
        "-m",
        *TINY,
        "trainer.seed=5",
        "sweep.seeds=3",
        "optimizer=sgd",
        "optimizer.lr=0.05,1e12",
        "hydra.sweep.dir=sweep",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "6 jobs: 3 completed, 3 diverged" in result.stdout
    assert "mean ± std over seeds" in result.stdout  # the terminal shows the groups
    return tmp_path / "sweep"


def test_every_configuration_runs_over_the_seeds_from_trainer_seed(seeded):
    jobs = [read_summary(p)["config"] for p in seeded.iterdir() if p.is_dir() and p.name != "report"]
    ran = sorted((c["optimizer"]["lr"], c["trainer"]["seed"]) for c in jobs)
    assert ran == [(0.05, 5), (0.05, 6), (0.05, 7), (1e12, 5), (1e12, 6), (1e12, 7)]


def test_the_group_table_holds_the_spread_of_each_configuration_over_its_seeds(seeded):
    table = json.loads((seeded / "sweep_table.json").read_text())
    learning, exploding = table["groups"]  # as Hydra writes the values: 1e12 is 1000000000000.0
    assert (learning["optimizer.lr"], float(exploding["optimizer.lr"])) == ("0.05", 1e12)
    assert learning["group"] == "optimizer.lr=0.05"
    summaries = [read_summary(seeded / job) for job in learning["jobs"]]
    assert learning["seeds"] == 3 and learning["statuses"] == {"completed": 3}
    assert exploding["statuses"] == {"diverged": 3}
    for metric in SPREAD:
        values = [s[metric] for s in summaries]
        spread = learning[metric]
        assert spread["n"] == 3
        assert spread["mean"] == pytest.approx(statistics.fmean(values), rel=1e-12)
        assert spread["std"] == pytest.approx(statistics.stdev(values), rel=1e-9)
        assert (spread["min"], spread["max"]) == (min(values), max(values))
    assert exploding["final_val_loss"] is None  # a diverged run has no final loss: no made-up mean
    counted = {}  # "vanishing 2/3, stable 1/3" -> {"vanishing": 2, "stable": 1}
    for part in learning["verdict"].split(", "):
        verdict, fraction = part.rsplit(" ", 1)
        assert fraction.endswith("/3")
        counted[verdict] = int(fraction.split("/")[0])
    assert counted == dict(Counter(s["verdict"] for s in summaries))
    with open(seeded / "sweep_group_table.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["optimizer.lr"] for r in rows] == [learning["optimizer.lr"], exploding["optimizer.lr"]]
    assert float(rows[0]["final_val_loss_mean"]) == pytest.approx(learning["final_val_loss"]["mean"])
    assert (rows[1]["diverged"], rows[1]["final_val_loss_mean"]) == ("3", "")


def test_the_figures_draw_each_configuration_over_its_seeds(seeded):
    for figure in ("norm_vs_depth", "final_loss", "gradient_flow"):
        assert (seeded / "report" / f"{figure}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_gradient_flow_is_a_panel_per_configuration_the_mean_of_its_seeds_log_norms(seeded):
    """Each panel's colour at a layer and step is the mean over the seeds of log10 of the norm
    each seed logged there (read back from the event files), over the seeds that logged a finite
    one; the diverged configuration's title says so."""
    table = build(seeded)
    learning, exploding = flow_panels(table)
    assert learning.title == "optimizer.lr=0.05 (mean of 3 seeds)"
    assert exploding.title.endswith("(mean of 3 seeds; 3 diverged)")
    jobs = table.groups()[0].jobs
    logged = [read_scalars(job.path) for job in jobs]
    layers = sorted(tag.removeprefix("grad_norm/") for tag in logged[0] if tag[10:13].isdigit())
    assert learning.layers == layers and len(layers) == 4  # TINY: 3 hidden layers and the output
    assert learning.steps == sorted(logged[0]["grad_norm/001_hidden"])
    for row, layer in enumerate(layers):
        for column, step in enumerate(learning.steps):
            logs = [math.log10(seed[f"grad_norm/{layer}"][step]) for seed in logged]
            assert learning.grid[row, column] == pytest.approx(statistics.fmean(logs), rel=1e-6)
    assert not statistics.stdev(logs) == 0  # the seeds differ: a mean, not one seed's copy


@pytest.mark.parametrize(
    "args, expected",
    [
        (
            ["sweep.seeds=3"],
            "sweep.seeds=3: runs each configuration of a sweep over several seeds; allowed: add -m, or 1",
        ),
        (["-m", "sweep.seeds=0"], "sweep.seeds=0: out of range; allowed: an integer >= 1"),
        (
            ["-m", "sweep.seeds=3", "trainer.seed=0,4"],
            "sweep.seeds=3: trainer.seed is swept too (0,4); allowed: one of the two: sweep.seeds=N "
            "from one trainer.seed, or trainer.seed=a,b,c alone",
        ),
    ],
)
def test_a_seeds_mistake_is_one_line(tmp_path, monkeypatch, capsys, args, expected):
    result = run_in_process(*args, *TINY, cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys)
    assert result.returncode == 2
    assert result.stderr.strip() == f"gradexp: error: {expected}"
    assert not (tmp_path / "outputs").exists()


def test_a_seeded_sweep_resumes_with_its_own_command_line(seeded):
    """The resume command a sweep prints repeats the seeds it swept (trainer.seed=5,6,7) beside
    sweep.seeds=3: that is the same sweep, not a second sweep of the seeds."""
    again = run_cli(
        "-m",
        *TINY,
        "trainer.seed=5,6,7",
        "sweep.seeds=3",
        "optimizer=sgd",
        "optimizer.lr=0.05,1e12",
        f"hydra.sweep.dir={seeded}",
        "sweep.resume=true",
        cwd=seeded.parent,
    )
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("(kept from before)") == 6
