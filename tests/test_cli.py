"""The `gradexp` command as a user runs it: in a subprocess, reading back the files it writes."""

import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

import gradexp
from gradexp.config import CONFIG_DIR
from gradexp.config.compose import mode_known
from gradexp.config.preflight import check_command_line
from tests.conftest import (
    TINY,
    TINY_RNN,
    interrupt_once_training,
    read_scalars,
    read_summary,
    run_cli,
    run_in_process,
    start_gradexp,
)


def test_default_experiment_writes_events_summary_and_says_where(tmp_path):
    result = run_cli("trainer.steps=30", cwd=tmp_path, module=False)
    assert result.returncode == 0, result.stderr
    [run_dir] = list((tmp_path / "outputs" / "runs").glob("*/*"))
    assert f"tensorboard --logdir {run_dir.relative_to(tmp_path)}" in result.stdout
    assert str(run_dir.relative_to(tmp_path)) in result.stdout and "completed" in result.stdout
    summary = read_summary(run_dir)
    assert summary["status"] == "completed" and summary["config"]["activation"]["name"] == "relu"
    scalars = read_scalars(run_dir)
    assert {"loss/train", "loss/val", "acc/val", "lr", "grad_norm/total"} <= set(scalars)
    assert {f"grad_norm/{layer}" for layer in summary["layers"]} <= set(scalars)
    assert all(0 in scalars[f"grad_norm/{layer}"] for layer in summary["layers"])
    assert (run_dir / ".hydra" / "config.yaml").is_file() and (run_dir / "gradexp.log").is_file()


def test_deep_sigmoid_example_from_the_readme_shows_vanishing(tmp_path):
    result = run_cli(
        "model.depth=30",
        "activation=sigmoid",
        "init=xavier_uniform",
        "norm=none",
        "optimizer=sgd",
        "optimizer.lr=0.1",
        "trainer.steps=2",
        "hydra.run.dir=run",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    summary = read_summary(tmp_path / "run")
    first = summary["grad_norm_first"]
    assert len(summary["layers"]) == 31 and first["001_hidden"] < 1e-10 * first["030_hidden"]
    assert "001_hidden" in result.stdout  # the per-layer table


def test_rnn_example_records_input_and_recurrent_matrices_and_clipping(tmp_path):
    result = run_cli(
        *TINY_RNN,
        "model.cell=rnn_tanh",
        "task.seq_len=100",
        "trainer.clip.max_norm=1.0",
        "hydra.run.dir=run",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    scalars = read_scalars(tmp_path / "run")
    assert {
        "grad_norm/001_rnn1_ih",
        "grad_norm/002_rnn1_hh",
        "grad_norm/003_output",
        "grad_norm/total_clipped",
    } <= set(scalars)
    assert max(scalars["grad_norm/total_clipped"].values()) <= 1.0 + 1e-5
    assert "acc/val" not in scalars


def test_divergence_exits_zero_with_status_diverged(tmp_path):
    result = run_cli(
        *TINY,
        "init=normal",
        "init.std=50.0",
        "activation=identity",
        "model.depth=8",
        "optimizer=sgd",
        "optimizer.lr=1.0",
        "hydra.run.dir=run",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    summary = read_summary(tmp_path / "run")
    assert summary["status"] == "diverged" and summary["first_nonfinite_layer"] in summary["layers"]
    assert "diverged" in result.stdout
    assert not math.isfinite(read_scalars(tmp_path / "run")["grad_norm/total"][summary["diverged_step"]])


def test_help_lists_every_group_and_its_choices(tmp_path):
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0
    expected = {
        "activation": "elu, gelu, identity, leaky_relu, relu, selu, sigmoid, softsign, tanh",
        "init": "constant, default, kaiming_normal, kaiming_uniform, normal, orthogonal, uniform, "
        "xavier_normal, xavier_uniform",
        "model": "cnn, custom, mlp, rnn, transformer",
        "norm": "batchnorm, layernorm, none",
        "optimizer": "adagrad, adam, adamw, momentum, nesterov, rmsprop, sgd",
        "scheduler": "cosine, exponential, none, step",
        "task": "adding, blobs, cifar10, custom, fashion_mnist, images, mnist, teacher, tokens",
    }
    for group, choices in expected.items():
        assert f"{group}: {choices}" in result.stdout


def test_cfg_job_prints_the_composed_config_without_training(tmp_path):
    result = run_cli("--cfg", "job", "model=rnn", "model.cell=gru", cwd=tmp_path)
    assert result.returncode == 0
    assert "cell: gru" in result.stdout and "trainer:" in result.stdout
    assert not (tmp_path / "outputs").exists()


BAD_INPUT = [
    (["activation=sigmoidd"], "activation=sigmoidd", "sigmoid, softsign, tanh"),
    (["model.depth=0"], "model.depth=0", ">= 1"),
    (["optimizer.lr=-1"], "optimizer.lr=-1", "> 0"),
    (["model.depth=abc"], "model.depth=abc", "an integer"),
    (["model.dept=3"], "model.dept: no such key (did you mean model.depth?)", "depth"),
    (["activaton=relu"], "activaton: no such key (did you mean activation?)", "activation"),
    (["model.cell=lstm"], "model.cell: no such key for this model (it belongs to model=rnn)", "depth"),
    (
        ["model=rnn", "model.depth=3"],
        "model.depth: no such key for this model (it belongs to model=cnn, model=mlp, model=transformer)",
        "cell",
    ),
    (["model.depth=é"], "model.depth=é: cannot parse it", "model.depth='é'"),
    (
        ["model.depth=" + "9" * 5000],
        "model.depth=999999999999...999999999999 (5000 characters)",
        "cannot read it",
    ),
    (["model=rnn", "norm=batchnorm"], "norm=batchnorm", "none"),
    (["model=rnn", "activation=tanh"], "activation=tanh", "model.cell"),
    (["trainer.device=tpu"], "trainer.device=tpu", "cuda:N"),
    (["-m", "model.depth=3,-2"], "model.depth=-2", ">= 1"),
    (["model.depth=3,4"], "model.depth=3,4", "add -m"),
    (["optimizer.lr=${oops}"], "optimizer.lr=${oops}", "a number"),
    (["hydra.run.dir="], "hydra.run.dir='': empty", "a directory"),
    (["-m", "model.depth=range(4,1)"], "model.depth=range(4,1): sweeps no values", "at least one value"),
    (["-m", "activation=glob(zz*)"], "activation=glob(zz*): sweeps no values", "at least one value"),
    (
        ["experiment=vanishing_sigmoid"],
        "experiment=vanishing_sigmoid: a sweep preset",
        "gradexp -m experiment=",
    ),
    (["hparams_search=largest_stable_lr"], "hparams_search=largest_stable_lr: a sweep preset", "gradexp -m"),
    (["--shell-completion"], "--shell-completion: needs an action: install=<shell>", "install=bash"),
    # too large for any machine: refused before a layer is built, naming the key that makes it so
    (
        ["model.depth=" + "9" * 4000],
        "model.depth=999999999999...999999999999 (4000 characters)",
        "fit in memory",
    ),
    (["model.width=" + "9" * 30], "model.width=" + "9" * 30 + ": out of range", "fit in memory"),
    (["model.width=1000000000000"], "model.width=1000000000000: out of range: the run would need", "memory"),
    (["task.n_train=10000000000"], "task.n_train=10000000000: out of range", "fit in memory"),
    (["model=rnn", "model.num_layers=100000000"], "model.num_layers=100000000: out of range", "memory"),
    # found by the property test: Adam's first step divides lr by 1 - beta1, past float32's range
    (["model=rnn", "optimizer.lr=3.489e37"], "optimizer.lr=3.489e+37: out of range", "lr / (1 - beta1)"),
]


@pytest.mark.parametrize("args, names, allowed", BAD_INPUT, ids=[" ".join(a)[:40] for a, _, _ in BAD_INPUT])
def test_bad_input_is_one_line_naming_key_value_and_allowed(
    tmp_path, monkeypatch, capsys, args, names, allowed
):
    result = run_in_process(*args, cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert names in lines[0] and allowed in lines[0], lines[0]
    assert list(tmp_path.iterdir()) == []  # stopped before anything was written


def test_bad_input_in_a_process_of_its_own_is_one_line_and_exit_status_2(tmp_path):
    """The same refusal as above through the installed script: no traceback from the interpreter."""
    result = run_cli("model.depth=0", cwd=tmp_path, module=False)
    assert result.returncode == 2
    assert result.stderr == "gradexp: error: model.depth=0: out of range; allowed: an integer >= 1\n"
    assert not (tmp_path / "outputs").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_asking_for_cuda_without_it_is_a_config_error(tmp_path):
    result = run_cli("trainer.device=cuda", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "gradexp: error: trainer.device=cuda: CUDA is not available on this machine; allowed: auto, cpu"
    )


def test_ctrl_c_leaves_a_readable_run_and_no_traceback(tmp_path):
    args = ["trainer.steps=1000000", "hydra.run.dir=run"]
    result = interrupt_once_training(args, tmp_path, started="run/events.out.tfevents.*")
    assert result.returncode == 130
    assert "Traceback" not in result.stderr and "interrupted" in result.stderr
    summary = read_summary(tmp_path / "run")
    assert summary["status"] == "interrupted" and summary["steps_completed"] >= 1
    assert 0 in read_scalars(tmp_path / "run")["loss/train"]


def test_sigterm_stops_at_the_end_of_a_step_with_every_step_recorded(tmp_path):
    """A cluster's pre-emption: the step in flight finishes and is recorded, then the run ends."""
    args = [*TINY, "trainer.steps=1000000", "trainer.log_every=1", "hydra.run.dir=run"]
    result = interrupt_once_training(
        args, tmp_path, started="run/events.out.tfevents.*", signals=(signal.SIGTERM,)
    )
    assert result.returncode == 143  # 128 + SIGTERM
    assert "Traceback" not in result.stderr and "interrupted (SIGTERM)" in result.stderr
    summary = read_summary(tmp_path / "run")
    assert summary["status"] == "interrupted" and summary["steps_completed"] >= 1
    assert max(read_scalars(tmp_path / "run")["loss/train"]) == summary["steps_completed"] - 1


def test_a_second_ctrl_c_stops_at_once_and_still_leaves_the_summary(tmp_path):
    args = ["trainer.steps=1000000", "hydra.run.dir=run"]
    signals = (signal.SIGINT, signal.SIGINT)
    result = interrupt_once_training(args, tmp_path, started="run/events.out.tfevents.*", signals=signals)
    assert result.returncode == 130 and "Traceback" not in result.stderr
    assert read_summary(tmp_path / "run")["status"] == "interrupted"


def test_an_output_directory_that_cannot_be_created_is_one_line_before_anything_runs(tmp_path):
    (tmp_path / "taken").write_text("a file, not a directory")
    for args in (["hydra.run.dir=taken/run"], ["-m", "hydra.sweep.dir=taken/sweep", "model.depth=2,3"]):
        result = run_cli(*args, cwd=tmp_path)
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
        assert "dir=taken/" in result.stderr and "taken is a file" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # nothing created, nothing overwritten


def test_two_runs_started_at_once_in_one_directory_one_is_refused(tmp_path):
    """The one that takes the directory first writes it alone; the other is refused in one line,
    and the directory holds one run's files: summary, overrides and events agree."""
    command = [sys.executable, "-m", "gradexp", *TINY, "trainer.steps=200", "hydra.run.dir=same"]
    runs = [
        subprocess.Popen(
            [*command, f"trainer.seed={seed}"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in (1, 2)
    ]
    results = [(run.wait(timeout=300), *run.communicate()) for run in runs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    [refused] = [err for code, _, err in results if code == 2]
    assert refused.count("\n") == 1 and "hydra.run.dir=same: " in refused
    assert "another gradexp process is writing into it" in refused or "already holds files" in refused
    summary = read_summary(tmp_path / "same")
    seed = summary["config"]["trainer"]["seed"]
    overrides = (tmp_path / "same" / ".hydra" / "overrides.yaml").read_text()
    assert f"trainer.seed={seed}" in overrides and summary["status"] == "completed"
    assert (
        len([p for p in (tmp_path / "same").glob("events.out.tfevents.*") if not p.name.endswith("hparams")])
        == 1
    )


def test_a_run_directory_that_holds_files_is_refused_and_left_as_it_was(tmp_path):
    assert run_cli(*TINY, "trainer.steps=2", "hydra.run.dir=done", cwd=tmp_path).returncode == 0
    before = sorted(p.name for p in (tmp_path / "done").iterdir())
    again = run_cli(*TINY, "trainer.steps=2", "hydra.run.dir=done", cwd=tmp_path)
    assert again.returncode == 2 and again.stderr.count("\n") == 1
    assert (
        "hydra.run.dir=done: already holds files" in again.stderr and "trainer.resume=<dir>" in again.stderr
    )
    assert sorted(p.name for p in (tmp_path / "done").iterdir()) == before


def test_version_is_gradexps_own(tmp_path):
    result = run_cli("--version", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.startswith(f"gradexp {gradexp.__version__} (torch ")


def test_presets_are_listed_a_line_each_with_the_command_that_runs_them(tmp_path):
    result = run_cli("--presets", cwd=tmp_path)
    assert result.returncode == 0
    from gradexp.config import CONFIG_DIR

    for path in (CONFIG_DIR / "experiment").glob("*.yaml"):
        assert f"experiment={path.stem}" in result.stdout
    assert "gradexp -m experiment=vanishing_sigmoid" in result.stdout
    assert "gradexp experiment=deep_linear_product" in result.stdout  # a single run, without -m
    assert (
        "Deep sigmoid networks lose their gradient on the way to the input (sweeps model.depth, over 3 seeds)"
        in result.stdout
    )
    assert not list(tmp_path.iterdir())


def test_shell_completion_installs_and_completes_keys_and_choices(tmp_path):
    script = run_cli("-sc", "install=bash", cwd=tmp_path, module=False)
    assert script.returncode == 0 and "-F hydra_bash_completion gradexp" in script.stdout
    env = {**os.environ, "COMP_LINE": "gradexp activation=", "COMP_POINT": "19"}
    query = subprocess.run(
        [sys.executable, "-m", "gradexp", "-sc", "query=bash"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
    )
    assert query.returncode == 0 and "activation=tanh" in query.stdout.split()
    assert not list(tmp_path.iterdir())


def test_a_launcher_whose_extra_is_missing_names_the_extra(tmp_path):
    try:
        import hydra_plugins.hydra_ray_launcher  # noqa: F401

        pytest.skip("the Ray launcher is installed here")
    except ImportError:
        pass
    result = run_cli("-m", "hydra/launcher=ray_local", "model.depth=2,3", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "hydra/launcher=ray_local: its Hydra plugin is not installed: pip install -e '" in result.stderr


def test_the_run_log_keeps_the_per_layer_table_and_the_verdict(tmp_path):
    result = run_cli(*TINY, "hydra.run.dir=run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    log = (tmp_path / "run" / "gradexp.log").read_text()
    summary = read_summary(tmp_path / "run")
    assert "Per layer: gradient norm" in log and "status: completed after 20 steps" in log
    assert f"-> {summary['verdict']}" in log
    assert all(layer in log for layer in summary["layers"])


def test_a_second_ctrl_c_during_the_checkpoint_write_is_still_an_interruption(tmp_path):
    """The first Ctrl-C ends the step and writes a checkpoint; a second one while torch.save is
    writing it cuts the write short, and torch's zip writer turns the KeyboardInterrupt into its
    own RuntimeError ("unexpected pos"). That is still an interruption: exit 130, summary
    `interrupted`, no traceback, no half-written checkpoint left behind."""
    big = ["model.width=2048", "model.depth=4", "diagnostics=off", "diagnostics.figures=false"]
    deadline = time.monotonic() + 120
    args = [*big, "trainer.steps=1000000", "hydra.run.dir=run"]
    process = start_gradexp(args, tmp_path, "run/events.out.tfevents.*", poll=0.1)
    time.sleep(1.0)
    process.send_signal(signal.SIGINT)
    while not list(tmp_path.glob("run/.checkpoint.pt.*")) and time.monotonic() < deadline:
        time.sleep(0.002)
    time.sleep(0.02)  # inside torch.save
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130 and "Traceback" not in stderr, stderr
    assert read_summary(tmp_path / "run")["status"] == "interrupted"
    assert not list(tmp_path.glob("run/.checkpoint.pt.*"))


def test_a_run_that_draws_no_figure_never_imports_matplotlib(tmp_path):
    """matplotlib takes 0.4 s to import: a process that draws nothing (a run with figures off,
    a sweep's job whose figures wait for gradexp-report) does not pay it."""
    script = (
        "import sys\n"
        "from gradexp.cli import main\n"
        f"sys.argv = ['gradexp', *{[*TINY, 'diagnostics.figures=false', 'hydra.run.dir=run']!r}]\n"
        "main()\n"
        "print('matplotlib' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "False"
    assert read_summary(tmp_path / "run")["status"] == "completed"


@pytest.mark.parametrize(
    "argv",
    [
        ["model.depth=2"],
        ["-m", "model.depth=2,3"],
        ["hydra.mode=MULTIRUN", "model.depth=2"],
        ["-m", "hydra.mode=RUN", "model.depth=2"],
    ],
)
def test_the_mode_the_cli_gives_hydra_is_the_mode_hydra_composes(argv, tmp_path):
    """Hydra composes the whole config once only to read `hydra.mode` (`Hydra.get_mode`); the
    CLI answers it from the preflight's config instead (`mode_known`): the same answer."""
    dirs = [f"hydra.run.dir={tmp_path}/run", f"hydra.sweep.dir={tmp_path}/sweep"]
    plan = check_command_line([*argv, *dirs])
    overrides = [*(a for a in argv if a != "-m"), *dirs]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3", job_name="gradexp"):
        hydra = GlobalHydra.instance().hydra
        composed = hydra.get_mode(config_name="config", overrides=overrides)
        with mode_known(plan.hydra_mode):
            answered = hydra.get_mode(config_name="config", overrides=overrides)
        assert hydra.get_mode(config_name="config", overrides=overrides) == composed  # Hydra's own again
    assert answered == composed == plan.hydra_mode


def test_a_hydra_mode_set_without_the_flag_still_decides_what_runs(tmp_path):
    """`hydra.mode=MULTIRUN` without -m: Hydra runs a sweep of one job, as it would unanswered."""
    result = run_cli(*TINY, "hydra.mode=MULTIRUN", "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    [job] = [p for p in (tmp_path / "sweep").iterdir() if p.is_dir() and (p / "summary.json").is_file()]
    assert read_summary(job)["status"] == "completed"
    assert "1 job: 1 completed" in result.stdout
