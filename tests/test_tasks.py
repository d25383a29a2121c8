"""The synthetic tasks have the statistics their definitions promise."""

import pytest
import torch

from gradexp.config.validate import validate
from gradexp.tasks import build_task
from tests.conftest import make_config


def task(*overrides, seed=0):
    return build_task(validate(make_config(*overrides)).task, seed)


def test_adding_problem_marks_exactly_one_position_per_half():
    t = task("task=adding", "task.seq_len=40", "task.n_train=2000")
    markers = t.x_train[..., 1]
    assert torch.all(markers[:, :20].sum(dim=1) == 1)
    assert torch.all(markers[:, 20:].sum(dim=1) == 1)
    assert set(markers.unique().tolist()) == {0.0, 1.0}


def test_adding_problem_target_is_the_sum_of_the_marked_values_with_variance_one_sixth():
    t = task("task=adding", "task.seq_len=30", "task.n_train=20000")
    values, markers = t.x_train[..., 0], t.x_train[..., 1]
    torch.testing.assert_close(t.y_train.squeeze(-1), (values * markers).sum(dim=1))
    assert abs(t.y_train.var().item() - 1 / 6) < 0.01
    assert values.min() >= 0 and values.max() <= 1


def test_blobs_classes_are_balanced_and_separable():
    t = task("task=blobs", "task.n_classes=5", "task.n_train=1000")
    assert t.classification and t.d_out == 5
    assert torch.bincount(t.y_train).tolist() == [200] * 5
    # nearest class mean classifies far better than chance (0.2) at separation 3
    means = torch.stack([t.x_train[t.y_train == k].mean(0) for k in range(5)])
    predicted = torch.cdist(t.x_val, means).argmin(1)
    assert (predicted == t.y_val).float().mean() > 0.6


def test_teacher_targets_have_unit_variance_plus_the_noise_variance():
    clean = task("task=teacher", "task.n_train=4000", "task.noise=0.0")
    both = torch.cat([clean.y_train, clean.y_val])
    assert both.std().item() == pytest.approx(1.0, abs=1e-4)
    noisy = task("task=teacher", "task.n_train=4000", "task.noise=0.5")
    assert noisy.y_train.var().item() == pytest.approx(1.25, rel=0.1)
    assert not noisy.classification and noisy.d_out == 1


def test_validation_split_is_held_out_and_data_depends_only_on_the_seed():
    a, b, c = task("task=blobs"), task("task=blobs"), task("task=blobs", seed=1)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_val, b.y_val)
    assert not torch.equal(a.x_train, c.x_train)
    assert not any(torch.equal(row, a.x_val[0]) for row in a.x_train)
