"""Your own data: `task=custom task._target_=<module>.<callable>`, a function that returns the
training and validation data, trained on as the built-in tasks are.

It may return four tensors, `(x_train, y_train, x_val, y_val)`, or two datasets of `(x, y)`
pairs (any `torch.utils.data.Dataset` with a length), which are read once into tensors: like
every task, the data lives on the training device. With `trainer.workers` set, the datasets
stream through a DataLoader instead (`streaming`), read a batch at a time. It is called with
`seed=trainer.seed` when its signature takes it. `task.loss` says what the targets are:
`cross_entropy`, integer class labels per example (or per position of a sequence), with as many
outputs as the classes seen (or `task.outputs`); or `mse`, real-valued targets, with as many
outputs as a target has values.
"""

import functools
import inspect

import torch
from torch import Tensor
from torch.utils.data import Subset

from gradexp.config.errors import ConfigError, first_line
from gradexp.config.schema import TaskConfig
from gradexp.importing import import_callable
from gradexp.streaming import StreamedData

KEY = "task._target_"
EXAMPLE = "a function returning (x_train, y_train, x_val, y_val) or (train_set, val_set), e.g. mydata.load"
LOSSES = ("cross_entropy", "mse")


def load(cfg: TaskConfig, seed: int, workers: int | None = None):
    """(x_train, y_train, x_val, y_val, the number of outputs the model needs, the streamed
    data or None). Streamed (`workers` set), the tensors are each split's first examples."""
    target = import_callable(cfg._target_, KEY, EXAMPLE)
    try:
        takes_seed = "seed" in inspect.signature(target).parameters
    except (TypeError, ValueError):
        takes_seed = False
    try:
        returned = target(seed=seed) if takes_seed else target()
    except Exception as error:  # noqa: BLE001 (the user's own code failed)
        raise ConfigError(KEY, cfg._target_, f"failed: {first_line(error, typed=True)}") from None
    if workers is not None:
        return _streamed(cfg, returned, workers, seed)
    x_train, y_train, x_val, y_val = _tensors(cfg._target_, returned)
    _check_splits(cfg, (x_train, y_train), (x_val, y_val))
    read = _labels if cfg.loss == "cross_entropy" else _targets
    y_train, y_val, d_out = read(cfg, y_train, y_val)
    return _inputs(x_train), y_train, _inputs(x_val), y_val, d_out, None


def convert(loss: str, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """A batch as the model and the loss take it (see `_inputs` and `_as_targets`)."""
    return _inputs(x), _as_targets(loss, y)


def _inputs(x: Tensor) -> Tensor:
    """float32 inputs where they are real numbers (token ids stay integers)."""
    return x.float() if x.is_floating_point() else x


def _as_targets(loss: str, y: Tensor) -> Tensor:
    """Class labels as integers, or real targets as float32 vectors (a number is a vector of one)."""
    if loss == "cross_entropy":
        return y.long()
    return y.float().reshape(len(y), -1) if y.dim() < 2 else y.float()


def _check_splits(cfg: TaskConfig, train: tuple, val: tuple) -> None:
    """Both splits hold examples, as many targets as inputs, inputs of one shape; each split is
    (inputs, targets), whole or its first examples."""
    for split, (x, y) in (("training", train), ("validation", val)):
        if len(x) == 0 or len(x) != len(y):
            problem = f"gives {len(x)} {split} inputs and {len(y)} targets"
            raise ConfigError(KEY, cfg._target_, problem + ": at least one, as many of each", EXAMPLE)
    if train[0].shape[1:] != val[0].shape[1:]:
        shapes = f"{tuple(train[0].shape[1:])} to train on and {tuple(val[0].shape[1:])} to validate"
        raise ConfigError(KEY, cfg._target_, f"gives inputs of shape {shapes}: one shape for both")


def _streamed(cfg: TaskConfig, returned, workers: int, seed: int):
    """Two datasets, left where they are: only each split's first two examples are read now,
    to check them and build the model on."""
    if not _two_datasets(returned):
        raise ConfigError(
            "trainer.workers",
            workers,
            f"streams datasets; {cfg._target_} returned a {_kind(returned)}, in memory already",
            "null, or a function that returns (train_set, val_set)",
        )
    train_set, val_set = returned
    data = StreamedData(train_set, val_set, workers, seed, functools.partial(convert, cfg.loss))
    empty = (torch.empty(0), torch.empty(0))
    (x_train, y_train), (x_val, y_val) = (
        _read(cfg._target_, Subset(dataset, range(min(2, len(dataset)))), split) if len(dataset) else empty
        for split, dataset in (("training", train_set), ("validation", val_set))
    )
    _check_splits(cfg, (x_train, y_train), (x_val, y_val))
    if cfg.loss == "cross_entropy":
        _labels(cfg, y_train, y_val)  # integers from 0
        d_out = cfg.outputs or len(getattr(train_set, "classes", None) or ())
        if not d_out:
            raise ConfigError(
                "task.outputs",
                None,
                "streamed data is not read ahead to count its classes (and its dataset has no .classes)",
                "the number of classes",
            )
    else:
        d_out = _targets(cfg, y_train, y_val)[2]
    x_train, y_train = convert(cfg.loss, x_train, y_train)
    x_val, y_val = convert(cfg.loss, x_val, y_val)
    return x_train, y_train, x_val, y_val, d_out, data


def _tensors(target: str, returned) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    if (
        isinstance(returned, tuple | list)
        and len(returned) == 4
        and all(isinstance(t, Tensor) for t in returned)
    ):
        return tuple(t.detach().cpu() for t in returned)
    if _two_datasets(returned):
        return (*_read(target, returned[0], "training"), *_read(target, returned[1], "validation"))
    raise ConfigError(KEY, target, f"returned a value of type {_kind(returned)}", EXAMPLE)


def _two_datasets(returned) -> bool:
    return isinstance(returned, tuple | list) and len(returned) == 2 and all(_is_dataset(d) for d in returned)


def _kind(returned) -> str:
    """What a function returned, for an error: 'NoneType', 'tuple of 3'."""
    return type(returned).__name__ + (f" of {len(returned)}" if isinstance(returned, tuple | list) else "")


def _is_dataset(data) -> bool:
    return hasattr(data, "__getitem__") and hasattr(data, "__len__") and not isinstance(data, Tensor)


def _read(target: str, dataset, split: str) -> tuple[Tensor, Tensor]:
    """A dataset's (x, y) pairs as two tensors, one example after another."""
    try:
        pairs = [dataset[i] for i in range(len(dataset))]
        return torch.stack([torch.as_tensor(x) for x, _ in pairs]), torch.stack(
            [torch.as_tensor(y) for _, y in pairs]
        )
    except Exception as error:  # noqa: BLE001 (items that are no (x, y) pairs of one shape)
        problem = f"gave a {split} set whose items are not (x, y) pairs of tensors of one shape"
        raise ConfigError(KEY, target, f"{problem}: {first_line(error, typed=True)}") from None


def _labels(cfg: TaskConfig, y_train: Tensor, y_val: Tensor) -> tuple[Tensor, Tensor, int]:
    """Class labels: integers from 0, one per example (or per position of a sequence)."""
    if y_train.is_floating_point() or y_train.is_complex() or y_train.dtype == torch.bool:
        raise ConfigError(
            "task.loss",
            cfg.loss,
            f"needs integer class labels; {cfg._target_} gives {y_train.dtype} targets",
            "mse for real-valued targets",
        )
    low = min(int(y_train.min()), int(y_val.min()))
    if low < 0:
        raise ConfigError(KEY, cfg._target_, f"gives the class label {low}: labels count from 0")
    seen = max(int(y_train.max()), int(y_val.max())) + 1
    if cfg.outputs is not None and seen > cfg.outputs:
        raise ConfigError(
            "task.outputs",
            cfg.outputs,
            f"{cfg._target_} gives the class label {seen - 1}",
            f"an integer >= {seen}",
        )
    return y_train.long(), y_val.long(), cfg.outputs or seen


def _targets(cfg: TaskConfig, y_train: Tensor, y_val: Tensor) -> tuple[Tensor, Tensor, int]:
    """Real-valued targets: a vector per example (a number is a vector of one)."""
    if not y_train.is_floating_point():
        raise ConfigError(
            "task.loss",
            cfg.loss,
            f"needs real-valued targets; {cfg._target_} gives {y_train.dtype} ones",
            "cross_entropy for class labels",
        )
    y_train, y_val = (_as_targets("mse", y) for y in (y_train, y_val))
    if y_train.shape[1:] != y_val.shape[1:]:
        raise ConfigError(
            KEY,
            cfg._target_,
            f"gives targets of shapes {tuple(y_train.shape[1:])} and {tuple(y_val.shape[1:])}: one for both",
        )
    return y_train, y_val, y_train.shape[-1]
