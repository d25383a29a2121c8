"""What gradexp prints and `gradexp-report` reads back: numbers are never cut, whatever the width,
a saved run's report comes back from its files, runs go side by side, and a directory that is
not a gradexp sweep is never written into."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from gradexp.engine import train
from gradexp.sinks.console import run_report
from gradexp.sinks.layout import fmt
from gradexp.sweeps import compare
from gradexp.sweeps.report import render
from gradexp.sweeps.table import build
from tests.conftest import make_config, read_summary, run_cli

REPORT = str(Path(sys.executable).parent / "gradexp-report")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """Two saved runs of a tanh network, with small weights (vanishing) and with He's."""
    root = tmp_path_factory.mktemp("runs")
    common = ["activation=tanh", "model.depth=8", "trainer.steps=30", "diagnostics.every=10"]
    train(make_config(*common, "init=normal", "init.std=0.05"), root / "small", show_progress=False)
    train(make_config(*common), root / "he", show_progress=False)
    return root


def snapshot(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()
    }


def rendered(parts: list, width: int) -> str:
    console = Console(width=width, record=True, force_terminal=True, color_system=None)
    for part in parts:
        console.print(part, highlight=False)
    return console.export_text()


def test_numbers_are_written_compactly_and_in_full():
    assert [fmt(v) for v in (5.71e-3, 2.91e-19, 0.0146, 52.31, 1.2e6, 0, None, float("nan"))] == [
        "0.00571",
        "2.91e-19",
        "0.0146",
        "52.3",
        "1.2e6",
        "0",
        "-",
        "nan",
    ]
    assert fmt(5.71e-4) == "5.71e-4" and fmt(-3.2e-12) == "-3.2e-12" and fmt(1060.0) == "1.06e3"
    # rounded before the form is chosen: the same number never reads two ways
    assert fmt(9.9996e-4) == fmt(0.001) == "0.001" and fmt(999.6) == fmt(1000.0) == "1e3"


@pytest.mark.parametrize("width", [60, 80, 120])
def test_the_run_table_never_cuts_a_number_or_a_layer_name(runs, width):
    """At any terminal width: every layer name and every value, as fmt writes it, is printed
    whole; columns that do not fit go into a further table below, which repeats the layer."""
    summary = read_summary(runs / "small")
    text = rendered(run_report(summary, width), width)
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= width
    for key in (
        "grad_norm_first",
        "grad_norm_last",
        "grad_signal_first",
        "act_std_first",
        "update_ratio_last",
    ):
        for layer, value in summary[key].items():
            assert f" {fmt(value)} " in text, (key, layer, fmt(value))
    for layer in summary["layers"]:
        assert f" {layer} " in text


def test_the_ratio_over_time_and_the_ratio_over_depth_are_named_apart(runs, tmp_path):
    summary = read_summary(runs / "small")
    text = rendered(run_report(summary, 200), 200)
    assert "grad step 0" in text and "grad step 29" in text and "step 29 / step 0" in text
    one_step = train(
        make_config("trainer.steps=1", "activation=tanh"), tmp_path / "probe", show_progress=False
    )
    text = rendered(run_report(one_step, 200), 200)
    assert text.count("grad step 0") == 1 and "/ step 0" not in text  # one step: one column each
    assert text.count("saturated step 0") == 1 and "status: completed after 1 step;" in text


def test_piped_output_is_laid_out_wide_not_at_80_columns(tmp_path):
    """A run whose output goes to a pipe (a file, a log) prints its table in one piece."""
    result = run_cli("model.depth=12", "trainer.steps=30", "hydra.run.dir=run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "…" not in result.stdout and "(1 of" not in result.stdout
    summary = read_summary(tmp_path / "run")
    assert all(fmt(v) in result.stdout for v in summary["grad_norm_first"].values())


def test_report_on_a_run_prints_its_table_and_verdict_again_and_writes_nothing(runs):
    before = snapshot(runs)
    result = subprocess.run([REPORT, str(runs / "small")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    summary = read_summary(runs / "small")
    assert "Per layer: gradient norm" in result.stdout and "001_hidden" in result.stdout
    assert f"at step 0 -> {summary['verdict']}" in result.stdout
    assert f"at step {summary['verdict_last_step']}" in result.stdout
    assert "status: completed after 30 steps" in result.stdout
    assert snapshot(runs) == before


def test_report_puts_two_runs_side_by_side_in_the_terminal_and_a_figure(runs, tmp_path):
    before = snapshot(runs)
    figure = tmp_path / "both.png"
    result = subprocess.run(
        [REPORT, str(runs / "small"), str(runs / "he"), "--figure", str(figure)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    small, he = read_summary(runs / "small"), read_summary(runs / "he")
    assert "small  mlp 8x16 tanh norm=none init=normal" in result.stdout
    assert "he  mlp 8x16 tanh norm=none init=kaiming_normal" in result.stdout
    wide = rendered(compare.layer_tables([small, he], 400), 400)  # headings wrap in a narrower table
    for heading in (
        "A grad step 0",
        "B grad step 0",
        "A grad step 29",
        "A signal step 0",
        "B signal step 29",
    ):
        assert heading in wide
    for layer in small["layers"]:
        assert fmt(small["grad_norm_first"][layer]) in result.stdout
        assert fmt(he["grad_norm_first"][layer]) in result.stdout
    assert f"{small['verdict']} (step 0)" in result.stdout and f"{he['verdict']} (step 0)" in result.stdout
    assert fmt(small["final_val_loss"]) in result.stdout and fmt(he["final_val_loss"]) in result.stdout
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert snapshot(runs) == before


def test_report_on_a_directory_that_is_no_sweep_prints_its_runs_and_writes_nothing(runs):
    before = snapshot(runs)
    result = subprocess.run([REPORT, str(runs)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "2 jobs: 2 completed" in result.stdout and "written nowhere" in result.stdout
    assert snapshot(runs) == before


def test_report_refuses_to_compare_a_sweep_in_one_line(runs, tmp_path):
    result = subprocess.run(
        [REPORT, str(runs / "small"), str(runs)], capture_output=True, text=True, timeout=60
    )
    assert (
        result.returncode == 2 and result.stderr.count("\n") == 1 and "not a run directory" in result.stderr
    )


def test_the_sweep_table_at_80_columns_cuts_no_cell(tmp_path):
    """Job names, statuses, swept values and metrics are printed whole in a narrow terminal."""
    result = run_cli(
        "-m",
        "model.depth=2,3",
        "activation=tanh,relu",
        "trainer.steps=5",
        "model.width=8",
        "hydra.sweep.dir=sweep",
        "diagnostics.figures=false",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    table = build(tmp_path / "sweep")
    text = rendered(render(table, 80), 80)
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80
    rows = json.loads((tmp_path / "sweep" / "sweep_table.json").read_text())["jobs"]
    for row in rows:
        assert row["status"] in text and fmt(row["final_val_loss"]) in text
    assert "grad 1st layer / last layer" in " ".join(rendered(render(table, 200), 200).split())
