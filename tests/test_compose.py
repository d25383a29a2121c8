"""A sweep job's config made from an earlier job's (gradexp.config.compose) is the config Hydra
composes for it, field for field, and is made without composing where only plain values differ."""

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.types import RunMode
from omegaconf import OmegaConf, open_dict

from gradexp.config import CONFIG_DIR
from gradexp.config.compose import ComposeOnce

MASTER = ["hydra.sweep.dir=/tmp/sweep", "hydra.job.config.override_dirname.exclude_keys=[trainer.steps]"]

# Each list: the jobs of one sweep, in the order a launcher composes them.
SWEEPS = {
    "plain values": [
        ["model.depth=2", "trainer.seed=0", "trainer.steps=5"],
        ["model.depth=3", "trainer.seed=1", "trainer.steps=5"],
        ["model.depth=30", "trainer.seed=0", "trainer.steps=5"],
    ],
    "values of every kind": [
        ["optimizer.lr=1e-3", "trainer.clip.max_norm=null", "task.name=blobs", "model.width=16"],
        ["optimizer.lr=0.5", "trainer.clip.max_norm=1.0", "task.name='a b'", "model.width=${model.depth}"],
        ["optimizer.lr=2", "trainer.clip.max_norm=true", 'task.name="x,y"', "model.width=-1"],
    ],
    "group choices beside values": [
        ["activation=tanh", "model.depth=4"],
        ["activation=relu", "model.depth=5"],
        ["activation=tanh", "model.depth=7"],
        ["activation=relu", "model.depth=6"],
    ],
    "a value that replaces a mapping, and back": [
        ["trainer.clip=null", "model.depth=2"],
        ["trainer.clip=null", "model.depth=3"],
        ["trainer.clip={max_norm: 1.0, value: null}", "model.depth=3"],
        ["trainer.clip={max_norm: 2.0, value: 0.5}", "model.depth=4"],
        ["trainer.clip={max_norm: 3.0}", "model.depth=4"],  # merged into the config's, not job 4's
    ],
    "added and deleted keys": [
        ["+trainer.note=a", "~trainer.eval_every", "model.depth=2"],
        ["+trainer.note=b", "~trainer.eval_every", "model.depth=3"],
        ["++trainer.note=c", "~trainer.eval_every", "model.depth=4"],
        ["++trainer.note=c", "~trainer.eval_every", "model.depth=5"],
    ],
    "the same values twice": [["model.depth=2"], ["model.depth=2"]],
    "one key twice, where the order decides": [
        ["model.depth=3", "++model.depth=9"],
        ["model.depth=4", "++model.depth=9"],
        ["trainer.clip.max_norm=2.0", "trainer.clip={max_norm: 3.0}"],
        ["trainer.clip.max_norm=1.0", "trainer.clip={max_norm: 3.0}"],
        ["trainer.clip.max_norm=1.0", "trainer.clip=null"],
        ["trainer.clip.max_norm=2.0", "trainer.clip=null"],
        ["trainer.eval_every=6", "~trainer.eval_every"],
        ["trainer.eval_every=7", "~trainer.eval_every"],
    ],
}


@pytest.fixture(scope="module")
def loader():
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3", job_name="gradexp"):
        yield GlobalHydra.instance().config_loader()


def _master(loader):
    return loader.load_configuration("config", overrides=MASTER, run_mode=RunMode.MULTIRUN)


def _as_data(config) -> dict:
    return OmegaConf.to_container(config, resolve=False)


def _count_composes(loader, monkeypatch) -> list[list[str]]:
    """The task overrides of each config Hydra composes from here on."""
    composed = []
    compose = loader.load_configuration

    def counted(config_name, overrides, *args):
        composed.append([o for o in overrides if not o.startswith("hydra")])
        return compose(config_name, overrides, *args)

    monkeypatch.setattr(loader, "load_configuration", counted)
    return composed


@pytest.mark.parametrize("name", SWEEPS)
def test_each_job_config_equals_hydras_own_compose(loader, name):
    master, reusing = _master(loader), ComposeOnce(loader)
    for overrides in SWEEPS[name]:
        expected = loader.load_sweep_config(master, overrides)
        made = reusing.load_sweep_config(master, overrides)
        assert _as_data(made) == _as_data(expected), overrides
        assert OmegaConf.is_struct(made) and not OmegaConf.is_readonly(made.hydra)
        assert OmegaConf.to_container(made.model, resolve=True) == OmegaConf.to_container(
            expected.model, resolve=True
        )
        made.hydra.job.num = 99  # what a launcher does to its job's config changes no later job's
        made.model.depth = -5


def test_jobs_that_differ_in_plain_values_are_composed_once(loader, monkeypatch):
    master, reusing = _master(loader), ComposeOnce(loader)
    composed = _count_composes(loader, monkeypatch)
    for depth in (2, 3, 4):
        for activation in ("tanh", "relu"):
            reusing.load_sweep_config(master, [f"activation={activation}", f"model.depth={depth}"])
    assert composed == [["activation=tanh", "model.depth=2"], ["activation=relu", "model.depth=2"]]


def test_a_new_sweep_composes_afresh(loader, monkeypatch):
    """Configs are kept per sweep: a config file changed between two sweeps in one process (a
    joblib worker outlives its sweep) is read again."""
    master = _master(loader)
    composed = _count_composes(loader, monkeypatch)
    for _ in range(2):
        ComposeOnce(loader).load_sweep_config(master, ["model.depth=2"])
    assert len(composed) == 2


def test_the_preflights_compose_equals_hydras_compose_api(loader):
    """gradexp's preflight composes the jobs it checks with `ComposeOnce.compose`, as Hydra's
    `compose()` would (from_shell=False), less the hydra node there."""
    reusing = ComposeOnce(loader)
    for overrides in [j for jobs in SWEEPS.values() for j in jobs]:
        made = reusing.compose("config", overrides, from_shell=False)
        assert made.hydra.overrides.task == overrides
        with open_dict(made):  # as compose() takes the hydra node out
            del made["hydra"]
        assert _as_data(made) == _as_data(compose("config", overrides=overrides)), overrides


def test_a_group_only_a_search_path_holds_is_composed_not_set_as_a_value(loader, tmp_path):
    """A user's own config group, found through hydra.searchpath (here chosen by their preset),
    is no plain value even though gradexp's own configs have no such group."""
    (tmp_path / "widths").mkdir()
    (tmp_path / "experiment").mkdir()
    for name, width in (("narrow", 8), ("wide", 32)):
        (tmp_path / "widths" / f"{name}.yaml").write_text(f"# @package _global_\nmodel: {{width: {width}}}\n")
    preset = "# @package _global_\ndefaults:\n  - /widths: narrow\n"
    (tmp_path / "experiment" / "mine.yaml").write_text(preset)
    master = loader.load_configuration(
        "config", overrides=[*MASTER, f"hydra.searchpath=[file://{tmp_path}]"], run_mode=RunMode.MULTIRUN
    )
    reusing = ComposeOnce(loader)
    for choice, width in (("narrow", 8), ("wide", 32), ("narrow", 8)):
        overrides = ["experiment=mine", f"widths={choice}"]
        made = reusing.load_sweep_config(master, overrides)
        assert made.model.width == width
        assert _as_data(made) == _as_data(loader.load_sweep_config(master, overrides))
