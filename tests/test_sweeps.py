"""Sweeps as a user runs them: real Hydra multiruns in subprocesses, the table and the figures
they leave, TensorBoard's run list and HParams dashboard read by TensorBoard itself."""

import csv
import json
import shlex
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer

from gradexp.run_files import is_sweep, sweep_record
from gradexp.sinks.hparams import columns
from gradexp.sweeps.naming import MAX_NAME, job_dir_name, naming_overrides
from gradexp.sweeps.objective import objective
from gradexp.sweeps.parallel import cores, threads_per_job
from tests.conftest import TINY, interrupt_once_training, logged_steps, make_config, read_summary, run_cli

SWEEP_DIR = ["hydra.sweep.dir=sweep"]
NOT_COMPARED = ("wall_time_s", "provenance", "config", "overrides")  # how a run was invoked, not its numbers


def sweep(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return run_cli("-m", *TINY, *SWEEP_DIR, *args, cwd=tmp_path)


def table_rows(sweep_dir: Path) -> list[dict]:
    with open(sweep_dir / "sweep_table.csv") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> Path:
    """A 2 x 2 grid, run once for the tests that read what it leaves."""
    tmp_path = tmp_path_factory.mktemp("grid")
    result = sweep(tmp_path, "model.depth=2,4", "activation=sigmoid,relu")
    assert result.returncode == 0, result.stderr
    assert "4 jobs: 4 completed" in result.stdout
    return tmp_path / "sweep"


def test_job_directories_and_tensorboard_runs_are_named_by_what_varies(grid):
    names = {
        "000_activation=sigmoid,model.depth=2",
        "001_activation=relu,model.depth=2",
        "002_activation=sigmoid,model.depth=4",
        "003_activation=relu,model.depth=4",
    }
    assert {p.name for p in grid.iterdir() if p.is_dir() and p.name != "report"} == names
    multiplexer = EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(grid))
    multiplexer.Reload()
    # the runs with curves, as TensorBoard lists them; "." (the sweep directory) holds only the
    # HParams dashboard's columns
    assert set(multiplexer.PluginRunToTagToContent("scalars")) == names
    assert multiplexer.Runs()["."]["tensors"] == ["_hparams_/experiment"]


def test_sweep_table_lists_every_job_with_its_swept_values_and_metrics(grid):
    rows = table_rows(grid)
    assert [(r["model.depth"], r["activation"]) for r in rows] == [
        ("2", "sigmoid"),
        ("2", "relu"),
        ("4", "sigmoid"),
        ("4", "relu"),
    ]
    for row in rows:
        summary = read_summary(grid / row["job"])
        assert row["status"] == "completed" and float(row["final_val_loss"]) == pytest.approx(
            summary["final_val_loss"]
        )
        assert row["verdict"] == summary["verdict"]
    table = json.loads((grid / "sweep_table.json").read_text())
    assert table["swept"] == ["model.depth", "activation"]
    assert table["fixed"]["trainer.steps"] == "20" and table["counts"] == {"completed": 4}
    # the sigmoid networks' first layers get a smaller share of the gradient than the ReLU ones'
    ratio = {(r["model.depth"], r["activation"]): float(r["grad_ratio_first_last"]) for r in rows}
    assert ratio[("4", "sigmoid")] < ratio[("4", "relu")]


def test_a_runs_hparams_columns_are_its_overrides_typed_as_in_its_config():
    """Each override's value as its config holds it (a number, a group's choice as typed, a list's
    item), left out where null, and as typed where the config has no such key."""
    config = {
        "model": {"name": "mlp", "depth": 4, "residual": True},
        "activation": {"name": "relu"},
        "optimizer": {"name": "adam", "betas": [0.8, 0.999]},
        "trainer": {"clip": {"max_norm": None}, "seed": 3},
    }
    overrides = [
        "model.depth=4",
        "activation=relu",
        "optimizer.betas.0=0.8",
        "trainer.clip.max_norm=null",
        "+model.residual=true",
        "trainer.seed=3",
        "optimizer.betas.5=1",
        "no.such.key=abc",
    ]
    summary = {"overrides": overrides, "config": config, "status": "completed", "verdict": "healthy"}
    assert columns(summary) == {
        "model.depth": 4.0,
        "activation": "relu",
        "optimizer.betas.0": 0.8,
        "model.residual": True,
        "trainer.seed": 3.0,
        "optimizer.betas.5": "1",
        "no.such.key": "abc",
        "status": "completed",
        "verdict": "healthy",
    }
    reference = OmegaConf.create(config)  # what the columns were read with before: the same values
    for override in overrides:
        key, _, text = override.partition("=")
        key = key.lstrip("+~")
        node = OmegaConf.select(reference, key, default=text)
        expected = node if isinstance(node, bool | int | float | str) or node is None else text
        assert columns({**summary, "overrides": [override]}).get(key) == (
            None if expected is None else expected if isinstance(expected, bool | str) else float(expected)
        ), override


def test_hparams_dashboard_shows_each_run_with_swept_values_and_final_metrics(grid):
    """TensorBoard itself, served over HTTP, as the browser's HParams tab asks it."""
    from tensorboard import program

    board = program.TensorBoard()
    board.configure(argv=[None, "--logdir", str(grid), "--port", "0", "--load_fast", "false"])
    url = board.launch()

    def post(route: str, body: dict) -> dict:
        request = urllib.request.Request(
            f"{url}data/plugin/hparams/{route}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        return json.loads(urllib.request.urlopen(request, timeout=60).read())

    experiment = post("experiment", {"experimentName": ""})
    columns = {h["name"] for h in experiment["hparamInfos"]}
    assert {"model.depth", "activation", "status", "verdict"} <= columns
    metrics = {m["name"]["tag"] for m in experiment["metricInfos"]}
    assert {"hparams/final_val_loss", "hparams/final_val_acc", "hparams/grad_ratio_first_last"} <= metrics
    groups = post(
        "session_groups",
        {
            "experimentName": "",
            "allowedStatuses": ["STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_UNKNOWN"],
            "colParams": [],
            "startIndex": 0,
            "sliceSize": 100,
        },
    )["sessionGroups"]
    assert len(groups) == 4  # one row per run, none for a stray sub-folder
    for group in groups:
        summary = read_summary(grid / group["name"])
        assert group["hparams"]["model.depth"] == summary["config"]["model"]["depth"]
        assert group["hparams"]["activation"] == summary["config"]["activation"]["name"]
        assert group["hparams"]["status"] == "completed"
        values = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
        assert values["hparams/final_val_loss"] == pytest.approx(summary["final_val_loss"])


def test_report_rebuilds_table_and_figures_any_time(grid):
    for made in ("sweep_table.csv", "sweep_table.json"):
        (grid / made).unlink()
    for png in (grid / "report").glob("*.png"):
        png.unlink()
    script = Path(sys.executable).parent / "gradexp-report"
    result = subprocess.run([str(script), str(grid)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "4 jobs: 4 completed" in result.stdout
    assert len(table_rows(grid)) == 4
    for figure in ("norm_vs_depth", "final_loss", "gradient_flow"):
        assert (grid / "report" / f"{figure}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_on_a_directory_without_runs_is_one_line(tmp_path):
    script = Path(sys.executable).parent / "gradexp-report"
    for target in (tmp_path, tmp_path / "missing"):
        result = subprocess.run([str(script), str(target)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 2
        assert (
            result.stderr.count("\n") == 1
            and str(target) in result.stderr
            and "Traceback" not in result.stderr
        )


def test_failed_and_diverged_jobs_are_rows_and_the_exit_status_counts_them(tmp_path):
    """(n_train=64, batch_size=128) is invalid only as a combination, so it fails in its job; the
    other jobs run on, and lr=1e6 diverges."""
    result = sweep(
        tmp_path,
        "task.n_train=256,64",
        "trainer.batch_size=32,128",
        "optimizer=sgd",
        "optimizer.lr=0.05,1e6",
        "diagnostics=off",
    )
    assert result.returncode == 1
    assert "8 jobs: 3 completed, 3 diverged, 2 failed" in result.stdout
    assert "Traceback" not in result.stderr
    rows = table_rows(tmp_path / "sweep")
    failed = [r for r in rows if r["status"] == "failed"]
    assert [(r["task.n_train"], r["trainer.batch_size"]) for r in failed] == [("64", "128")] * 2
    assert all("trainer.batch_size=128" in r["error"] and "task.n_train (64)" in r["error"] for r in failed)
    assert {float(r["optimizer.lr"]) for r in rows if r["status"] == "diverged"} == {1e6}
    for row in rows:  # every job's files are there to read, whatever happened to the others
        assert read_summary(tmp_path / "sweep" / row["job"])["status"] == row["status"]
        assert list((tmp_path / "sweep" / row["job"]).glob("events.out.tfevents.*"))  # its HParams row


def test_jobs_in_one_process_leave_nothing_behind_for_the_next(tmp_path):
    """The basic launcher runs every job in one process: the second job must give what it gives
    alone, whatever seed and thread count the first one set."""
    result = sweep(tmp_path, "trainer.seed=7,3", "trainer.threads=1,null")
    assert result.returncode == 0, result.stderr
    alone = run_cli(*TINY, "trainer.seed=3", "hydra.run.dir=alone", cwd=tmp_path)
    assert alone.returncode == 0, alone.stderr
    jobs = {r["job"]: read_summary(tmp_path / "sweep" / r["job"]) for r in table_rows(tmp_path / "sweep")}
    last = jobs["003_trainer.seed=3,trainer.threads=null"]
    reference = read_summary(tmp_path / "alone")
    assert last["final_val_loss"] == reference["final_val_loss"]
    assert last["grad_norm_last"] == reference["grad_norm_last"]
    assert jobs["002_trainer.seed=3,trainer.threads=1"]["torch_threads"] == 1
    assert last["torch_threads"] == reference["torch_threads"]


def test_joblib_runs_jobs_in_parallel_processes_sharing_the_cores(tmp_path, monkeypatch):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    monkeypatch.delenv("PYTHONUNBUFFERED", raising=False)  # the workers' stdout block-buffered, as usual
    result = sweep(tmp_path, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "model.depth=2,3,4,5")
    assert result.returncode == 0, result.stderr
    # every job's line reaches the terminal, though the idle workers are killed at the end
    assert sorted(
        line.split()[1] for line in result.stdout.splitlines() if line.startswith("completed 00")
    ) == [f"00{i}_model.depth={i + 2}" for i in range(4)]
    rows = table_rows(tmp_path / "sweep")
    assert [r["status"] for r in rows] == ["completed"] * 4
    threads = {read_summary(tmp_path / "sweep" / r["job"])["torch_threads"] for r in rows}
    assert threads == {max(1, cores() // 2)}


def test_job_dir_names_sort_in_job_order_and_stay_short_and_unique():
    assert job_dir_name(3, "a=1,b=x") == "003_a=1,b=x"
    assert job_dir_name(12, "") == "012"
    assert job_dir_name(0, "task.path=/data/x") == "000_task.path=-data-x"  # no sub-directories
    long_a, long_b = job_dir_name(1, "k=" + "a" * 300), job_dir_name(1, "k=" + "a" * 299 + "b")
    assert len(long_a) <= MAX_NAME and long_a != long_b


def test_names_leave_out_what_the_command_line_fixes():
    assert naming_overrides(["-m", "model.depth=2,4", "trainer.steps=9", "hydra/launcher=joblib"]) == [
        "hydra.job.config.override_dirname.exclude_keys=[trainer.steps]"
    ]
    assert naming_overrides(["model.depth=2", "trainer.steps=9"]) == []  # a single run has no job names


def test_threads_are_shared_out_between_parallel_jobs():
    def hydra_cfg(n_jobs):
        return OmegaConf.create({"launcher": {"n_jobs": n_jobs}})

    assert threads_per_job(hydra_cfg(1)) is None  # one job at a time: torch's default
    assert threads_per_job(hydra_cfg(2)) == max(1, cores() // 2)
    assert threads_per_job(hydra_cfg(-1)) == 1  # one job per core
    assert threads_per_job(OmegaConf.create({"launcher": {}})) is None
    assert threads_per_job(OmegaConf.create({"launcher": {"cpus_per_task": 3}})) == 3  # submitit


def test_a_search_scores_diverged_and_failed_runs_as_the_worst_result():
    cfg = make_config("optimizer.lr=0.5")
    assert objective({"status": "completed", "final_val_loss": 0.3}, cfg) == 0.3
    assert objective({"status": "diverged", "final_val_loss": None}, cfg) == float("inf")
    assert objective({"status": "failed"}, cfg, "maximize") == float("-inf")  # the sweeper's direction
    assert objective({"status": "failed"}, cfg, ["maximize", "minimize"]) == float("-inf")
    stable = make_config("objective.metric=stable_lr", "optimizer.lr=0.5")
    assert objective({"status": "completed", "initial_val_loss": 2.0, "final_val_loss": 1.0}, stable) == 0.5
    assert objective({"status": "completed", "initial_val_loss": 1.0, "final_val_loss": 2.0}, stable) == 0.0
    assert objective({"status": "completed", "initial_val_loss": 1.0, "final_val_loss": 0.95}, stable) == 0.0
    assert objective({"status": "diverged"}, stable) == 0.0


def test_submitit_local_launcher_runs_each_job_in_its_own_process(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    result = sweep(
        tmp_path, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5", "model.depth=2,3"
    )
    assert result.returncode == 0, result.stderr
    rows = table_rows(tmp_path / "sweep")
    assert [r["status"] for r in rows] == ["completed"] * 2
    assert "2 jobs: 2 completed" in result.stdout


def test_optuna_search_scores_diverged_trials_and_carries_on(tmp_path):
    """The search's own config, shrunk: trials at large learning rates diverge, score 0, and the
    study still runs every trial and reports the best one."""
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    result = sweep(
        tmp_path,
        "hparams_search=largest_stable_lr",
        "hydra.sweeper.n_trials=6",
        "optimizer.lr=tag(log, interval(0.01, 1000.0))",
        "model.depth=3",
    )
    assert result.returncode == 0, result.stderr
    rows = table_rows(tmp_path / "sweep")
    assert len(rows) == 6 and "diverged" in {r["status"] for r in rows}
    results = (tmp_path / "sweep" / "optimization_results.yaml").read_text()
    best = float(results.split("best_value:")[1].split()[0])
    scores = []
    for row in rows:
        summary = read_summary(tmp_path / "sweep" / row["job"])
        scores.append(objective(summary, OmegaConf.create(summary["config"])))
    assert best == max(scores) and 0.0 in scores  # diverged trials scored, not raised


def test_every_preset_composes_and_every_swept_value_is_valid():
    """What `gradexp -m experiment=<name>` would run, checked without training."""
    from gradexp.config import CONFIG_DIR
    from gradexp.config.preflight import check_command_line

    presets = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))
    assert len(presets) >= 13
    for name in presets:
        check_command_line(["-m", f"experiment={name}"])
    check_command_line(["-m", "hparams_search=largest_stable_lr"])


def test_a_bad_value_in_a_users_own_preset_is_one_line_before_any_job(tmp_path):
    """A preset of one's own, found through hydra.searchpath, is checked like the shipped ones."""
    from gradexp.config import CONFIG_DIR

    (tmp_path / "mine" / "experiment").mkdir(parents=True)
    preset = (CONFIG_DIR / "experiment" / "vanishing_sigmoid.yaml").read_text()
    (tmp_path / "mine" / "experiment" / "deeper.yaml").write_text(preset.replace("2,5,10,20", "2,0"))
    result = run_cli(
        "-m", "experiment=deeper", f"hydra.searchpath=[file://{tmp_path / 'mine'}]", cwd=tmp_path
    )
    assert result.returncode == 2
    assert result.stderr == "gradexp: error: model.depth=0: out of range; allowed: an integer >= 1\n"
    assert not (tmp_path / "outputs").exists()


def test_a_launcher_that_is_not_installed_is_one_line_with_the_extra_to_install(tmp_path):
    result = run_cli("-m", "hydra/launcher=jobllib", "model.depth=2,3", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "hydra/launcher=jobllib: no such choice" in result.stderr and "joblib: [joblib]" in result.stderr
    assert "pip install -e '" in result.stderr  # from this checkout: PyPI's "gradexp" is another project


def test_jobs_as_threads_of_one_process_are_refused(tmp_path):
    """Each job sets the process's seed and thread count for itself: threads would share them."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    result = run_cli(
        "-m", "hydra/launcher=joblib", "hydra.launcher.prefer=threads", "model.depth=2,3", cwd=tmp_path
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith(
        "gradexp: error: hydra.launcher.prefer=threads: jobs would run as threads"
    )


def test_activations_figure_draws_every_registered_activation(tmp_path):
    script = Path(sys.executable).parent / "gradexp-report"
    result = subprocess.run([str(script), "--activations", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "activations.png").read_bytes()[:4] == b"\x89PNG"


def test_ray_local_launcher_runs_the_jobs_on_a_local_ray_instance(tmp_path, monkeypatch):
    """Ray is not in .[dev] (it is large): this runs where `.[ray]` is installed."""
    pytest.importorskip("hydra_plugins.hydra_ray_launcher")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # one machine: no token to set up
    result = sweep(tmp_path, "hydra/launcher=ray_local", "model.depth=2,3")
    assert result.returncode == 0, result.stderr
    rows = table_rows(tmp_path / "sweep")
    assert [r["status"] for r in rows] == ["completed"] * 2
    assert {read_summary(tmp_path / "sweep" / r["job"])["torch_threads"] for r in rows} == {1}  # num_cpus: 1


def test_ctrl_c_in_a_sweep_still_ends_with_the_table_of_what_ran(tmp_path):
    args = ["-m", "model.depth=2,3", "trainer.steps=1000000", *SWEEP_DIR]
    result = interrupt_once_training(args, tmp_path, started="sweep/*/events.out.tfevents.*")
    assert result.returncode == 130 and "Traceback" not in result.stderr
    assert "2 jobs: 1 interrupted, 1 unfinished" in result.stdout
    first, never_started = table_rows(tmp_path / "sweep")
    assert first["job"] == "000_model.depth=2" and first["status"] == "interrupted"
    # the job that never started is a row too, under the name it will have when it runs
    assert never_started["job"] == "001_model.depth=3" and never_started["status"] == "unfinished"
    assert not (tmp_path / "sweep" / "001_model.depth=3").exists()
    assert json.loads((tmp_path / "sweep" / "sweep_table.json").read_text())["swept"] == ["model.depth"]
    resume = "gradexp -m model.depth=2,3 trainer.steps=1000000 hydra.sweep.dir=sweep sweep.resume=true"
    assert f"resume:      {resume}" in result.stdout  # the command that goes on with it


def test_a_jobs_recorded_rerun_command_reproduces_it_alone(tmp_path):
    """summary.json's provenance holds the one-run command that gives the job's numbers again."""
    result = sweep(tmp_path, "model.depth=2,3", "trainer.deterministic=true")
    assert result.returncode == 0, result.stderr
    job = read_summary(tmp_path / "sweep" / "001_model.depth=3")
    record = job["provenance"]
    assert record["deterministic"] is True and record["versions"]["torch"] == torch.__version__
    assert " -m " in record["command"] and "model.depth=2,3" in record["command"]
    rerun = shlex.split(record["rerun"])
    assert rerun[0] == "gradexp" and "model.depth=3" in rerun
    alone = run_cli(*rerun[1:], "hydra.run.dir=alone", cwd=tmp_path)
    assert alone.returncode == 0, alone.stderr
    again = read_summary(tmp_path / "alone")
    assert (
        again["final_val_loss"] == job["final_val_loss"] and again["grad_norm_last"] == job["grad_norm_last"]
    )


def test_a_sweep_resumed_in_its_directory_keeps_finished_jobs_and_finishes_the_rest(tmp_path):
    # long enough that the first job is still training when Ctrl-C comes (600 tiny steps could end first)
    args = ["-m", *TINY, "trainer.steps=3000", "trainer.log_every=30", "model.depth=2,3", *SWEEP_DIR]
    stopped = interrupt_once_training(args, tmp_path, started="sweep/*/events.out.tfevents.*", wait=0.3)
    assert stopped.returncode == 130 and "2 jobs: 1 interrupted, 1 unfinished" in stopped.stdout
    first = tmp_path / "sweep" / "000_model.depth=2"
    assert (first / "checkpoint.pt").is_file()
    report = Path(sys.executable).parent / "gradexp-report"
    drawn = subprocess.run([str(report), str(first)], capture_output=True, text=True, timeout=120)
    assert "drawn now" in drawn.stdout  # the interrupted attempt's figures: stale once it resumes

    again = run_cli(*args, cwd=tmp_path)  # without the flag, an existing sweep is never written over
    assert again.returncode == 2 and "hydra.sweep.dir=sweep: already holds files" in again.stderr
    assert read_summary(first)["status"] == "interrupted"

    resumed = run_cli(*args, "sweep.resume=true", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "2 jobs: 2 completed" in resumed.stdout
    # how the jobs went on is no column of the table: the grid is what it was
    assert json.loads((tmp_path / "sweep" / "sweep_table.json").read_text())["swept"] == ["model.depth"]
    summary = read_summary(first)
    assert summary["status"] == "completed" and summary["steps_completed"] == 3000
    assert logged_steps(first, "loss/train") == [*range(0, 3000, 30), 2999]  # each logged step once
    # the stale figures are gone, and the figure data is the whole run's, for gradexp-report
    assert not (first / "figures").exists()
    assert json.loads((first / "figure_data.json").read_text())["norm_history"][-1][0] == 2999
    whole = run_cli(*args[:-1], "hydra.sweep.dir=whole", cwd=tmp_path)  # the sweep never interrupted
    assert whole.returncode == 0, whole.stderr
    for job in ("000_model.depth=2", "001_model.depth=3"):
        a, b = read_summary(tmp_path / "sweep" / job), read_summary(tmp_path / "whole" / job)
        assert {k: v for k, v in a.items() if k not in NOT_COMPARED} == {
            k: v for k, v in b.items() if k not in NOT_COMPARED
        }

    kept = {p: p.stat().st_mtime_ns for p in (tmp_path / "sweep").glob("*/summary.json")}
    done = run_cli(*args, "sweep.resume=true", cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.count("(kept from before)") == 2
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # finished jobs are not run again


def test_a_combination_hydra_cannot_compose_is_a_failed_row_not_a_refusal(tmp_path):
    """model.depth is an MLP's key: in `-m model=rnn,mlp model.depth=2` the MLP job runs and the
    RNN job is a failed row that says why, as every invalid combination is."""
    result = sweep(tmp_path, "model=rnn,mlp", "model.depth=2")
    assert result.returncode == 1 and "2 jobs: 1 completed, 1 failed" in result.stdout, result.stderr
    rnn, mlp = table_rows(tmp_path / "sweep")
    assert (rnn["model"], rnn["status"], mlp["model"], mlp["status"]) == ("rnn", "failed", "mlp", "completed")
    assert "no such key for this model (it belongs to model=mlp)" in rnn["error"]
    assert read_summary(tmp_path / "sweep" / mlp["job"])["config"]["model"]["depth"] == 2


def test_a_jobs_figures_are_left_for_gradexp_report_which_draws_the_runs_own(tmp_path):
    """A sweep's job saves what its end-of-run figures are drawn from instead of drawing them
    (about a fifth of a second a job); `gradexp-report <job>` draws them once, the same figures
    to the byte as the job run alone draws, into figures/ and TensorBoard's Images tab."""
    result = sweep(tmp_path, "model.depth=2,3", "trainer.deterministic=true")
    assert result.returncode == 0, result.stderr
    job = tmp_path / "sweep" / "001_model.depth=3"
    assert not (job / "figures").exists() and (job / "figure_data.json").is_file()
    script = str(Path(sys.executable).parent / "gradexp-report")

    def report(*flags: str) -> str:
        done = subprocess.run([script, str(job), *flags], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "drawn now" not in report("--no-figures") and not (job / "figures").exists()
    assert "(gradient_flow.png, norm_vs_depth.png, drawn now)" in report()
    assert "drawn now" not in report()  # drawn once
    rerun = shlex.split(read_summary(job)["provenance"]["rerun"])
    alone = run_cli(*rerun[1:], "hydra.run.dir=alone", cwd=tmp_path)
    assert alone.returncode == 0, alone.stderr
    drawn = {p.name: p.read_bytes() for p in (job / "figures").glob("*.png")}
    assert drawn == {p.name: p.read_bytes() for p in (tmp_path / "alone" / "figures").glob("*.png")}
    images = EventAccumulator(str(job))
    images.Reload()
    assert set(images.Tags()["images"]) == {"figures/gradient_flow", "figures/norm_vs_depth"}


def test_sweep_job_figures_true_draws_each_jobs_figures_as_it_ends(tmp_path):
    result = sweep(tmp_path, "model.depth=2,3", "sweep.job_figures=true")
    assert result.returncode == 0, result.stderr
    for job in ("000_model.depth=2", "001_model.depth=3"):
        run = tmp_path / "sweep" / job
        drawn = sorted(p.name for p in (run / "figures").iterdir())
        assert drawn == ["gradient_flow.png", "norm_vs_depth.png"]
        assert not (run / "figure_data.json").exists()


def test_a_sweeps_record_is_read_again_once_hydra_rewrites_it(tmp_path):
    """A sweep's end asks Hydra's record (multirun.yaml) several questions and loads it once; a
    record written anew (a resumed sweep's) is read anew, never answered from the old one."""
    record = tmp_path / "multirun.yaml"
    record.write_text("hydra:\n  job:\n    name: gradexp\n")
    first = sweep_record(tmp_path)
    assert first.job.name == "gradexp" and sweep_record(tmp_path) is first and is_sweep(tmp_path)
    record.write_text("hydra:\n  job:\n    name: another_app\n")
    assert sweep_record(tmp_path).job.name == "another_app" and not is_sweep(tmp_path)
    record.unlink()
    with pytest.raises(FileNotFoundError):
        sweep_record(tmp_path)
    assert not is_sweep(tmp_path)
