"""task=custom: the data a user's function returns (four tensors, or two datasets of (x, y)
pairs), trained with the loss task.loss names; a mistake in it is one line naming the key."""

import textwrap

import pytest
import torch

from gradexp.config.validate import validate
from gradexp.engine import train
from gradexp.tasks import build_task
from tests.conftest import make_config, read_summary, run_in_process

DATA = textwrap.dedent(
    """
    import torch

    def blobs(seed):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(400, 6, generator=g)
        y = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()  # four classes, 0 to 3
        return x[:300], y[:300], x[300:], y[300:]

    def pairs():
        x = torch.randn(120, 3, 4)
        y = (x.sum(dim=(1, 2)) > 0).long()
        return list(zip(x[:100], y[:100])), list(zip(x[100:], y[100:]))

    def sums():
        x = torch.randn(200, 5)
        return x[:150], x[:150, :2].sum(1), x[150:], x[150:, :2].sum(1)

    def nothing():
        return None

    def negative():
        x = torch.randn(40, 2)
        return x[:30], torch.full((30,), -1), x[30:], torch.zeros(10, dtype=torch.long)

    def raises():
        raise FileNotFoundError("/data/train.npy")
    """
)
SMALL = [
    "trainer.steps=20",
    "trainer.batch_size=16",
    "trainer.eval_every=10",
    "model.width=16",
    "model.depth=3",
]


def config(*overrides: str):
    """The real config (not the tiny runs', whose task.n_train task=custom does not have)."""
    return make_config("task=custom", *SMALL, *overrides, tiny=False)


@pytest.fixture
def in_data_dir(tmp_path, monkeypatch):
    (tmp_path / "userdata.py").write_text(DATA)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_function_returning_four_tensors_trains_with_a_class_per_label(in_data_dir):
    cfg = config("task._target_=userdata.blobs", "trainer.steps=150")
    summary = train(cfg, in_data_dir / "run", show_progress=False)
    assert summary["status"] == "completed"
    assert summary["final_val_acc"] > 0.5  # four classes: chance is 0.25
    assert summary["config"]["task"]["_target_"] == "userdata.blobs"
    task = build_task(validate(cfg).task, seed=0)
    assert (task.input_shape, task.d_out, task.classification) == ((6,), 4, True)
    assert task.x_train.dtype == torch.float32 and task.y_train.dtype == torch.int64


def test_datasets_of_pairs_are_read_and_read_flat_by_the_mlp(in_data_dir):
    summary = train(config("task._target_=userdata.pairs"), in_data_dir / "r", False)
    assert summary["status"] == "completed" and summary["num_params"] > 0
    assert summary["final_val_acc"] is not None


def test_mse_targets_train_a_regression_with_one_output(in_data_dir):
    cfg = config("task._target_=userdata.sums", "task.loss=mse")
    summary = train(cfg, in_data_dir / "run", show_progress=False)
    assert summary["status"] == "completed" and summary["final_val_acc"] is None
    assert summary["final_val_loss"] < summary["initial_val_loss"]


# (overrides after task=custom, the one line's text, whether it comes once the function has run)
MISTAKES = [
    ([], "task._target_: missing", False),
    (["task._target_=userdata.missing"], "task._target_=userdata.missing: cannot be imported", False),
    (["task._target_=userdata.blobs", "task.loss=hinge"], "task.loss=hinge: no such choice", False),
    (["task._target_=userdata.blobs", "model=cnn"], "model=cnn cannot read this task's data", False),
    (
        ["task._target_=userdata.nothing"],
        "task._target_=userdata.nothing: returned a value of type NoneType",
        True,
    ),
    (["task._target_=userdata.sums"], "task.loss=cross_entropy: needs integer class labels", True),
    (["task._target_=userdata.blobs", "task.loss=mse"], "task.loss=mse: needs real-valued targets", True),
    (["task._target_=userdata.negative"], "gives the class label -1: labels count from 0", True),
    (["task._target_=userdata.raises"], "failed: FileNotFoundError: /data/train.npy", True),
    (["task._target_=userdata.blobs", "trainer.batch_size=400"], "the training data has 300 examples", True),
]


@pytest.mark.parametrize(("overrides", "expected", "loaded"), MISTAKES)
def test_a_custom_data_mistake_is_one_line_naming_the_key(
    in_data_dir, monkeypatch, capsys, overrides, expected, loaded
):
    args = ["task=custom", *overrides, "trainer.steps=1"]
    result = run_in_process(*args, cwd=in_data_dir, monkeypatch=monkeypatch, capsys=capsys)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr
    runs = list(in_data_dir.glob("outputs/runs/*/*/summary.json"))
    assert len(runs) == loaded  # refused before anything is written, or failed with its summary
    if loaded:
        assert read_summary(runs[0].parent)["status"] == "failed"
