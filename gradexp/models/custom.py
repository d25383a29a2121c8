"""Your own network: `model=custom model._target_=<module>.<callable>`, any importable nn.Module
class or factory, built with Hydra's `instantiate` and trained and measured like the built-ins.

The target is imported from an installed package or from the directory gradexp runs in.
How it learns the task's shapes: the callable is given `input_shape` (one example's shape, a
tuple: `(32,)` for blobs, `(seq_len, 2)` for adding, `(3, 16, 16)` for images, `(seq_len,)` token
ids for tokens) and `d_out` (the outputs the task needs: its
classes, or its regression targets) when its signature names them (or takes **kwargs) and the
config does not set them. Every other keyword argument comes from the config:
`+model.width=256` (the `+` adds a key that configs/model/custom.yaml does not list).

Its layers and blocks are found from its module tree (gradexp/network.py); a model may name its
own with `gradexp_layers()` and `gradexp_blocks()`. `init=default` keeps its own initialization;
any other init sets every weight matrix (and `init.bias` every bias) as it does for an MLP.
"""

import inspect
from dataclasses import dataclass, field

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue
from torch import nn

from gradexp.config.errors import NO_VALUE, ConfigError, first_line
from gradexp.importing import import_callable
from gradexp.models.spec import ModelSpec, register
from gradexp.precision import autocast

KEY = "model._target_"
EXAMPLE = "an importable nn.Module class or factory, e.g. model._target_=mypackage.models.Net"


@dataclass
class CustomModelConfig:
    name: str = "custom"
    target: str = ""  # model._target_: module.callable
    kwargs: dict = field(default_factory=dict)  # every other key of the model group


def _typed(node: DictConfig) -> CustomModelConfig:
    try:
        target = node["_target_"]
    except MissingMandatoryValue:
        raise ConfigError(KEY, NO_VALUE, "missing", EXAMPLE) from None
    if not isinstance(target, str) or not target.strip():
        raise ConfigError(KEY, target, "not a callable's dotted path", EXAMPLE)
    kwargs = {
        k: v for k, v in OmegaConf.to_container(node, resolve=True).items() if k not in ("name", "_target_")
    }
    return CustomModelConfig(target=target, kwargs=kwargs)


def _check(c) -> None:
    """Import the target and bind its arguments, without building it: a typo in the path or in a
    keyword is one line before anything is written."""
    target = _import(c.model.target)
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return  # a builtin without a signature: instantiate will say
    try:
        signature.bind(**_arguments(c.model, signature, input_shape=(), d_out=0))
    except TypeError as error:
        raise ConfigError(KEY, c.model.target, f"does not take these arguments: {error}") from None


def _import(target: str):
    return import_callable(target, KEY, EXAMPLE)


def _arguments(m: CustomModelConfig, signature: inspect.Signature, input_shape, d_out) -> dict:
    """The config's keyword arguments, and the task's shapes where the callable takes them."""
    params = signature.parameters
    any_keyword = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    shapes = {"input_shape": tuple(input_shape), "d_out": d_out}
    given = {k: v for k, v in shapes.items() if (k in params or any_keyword) and k not in m.kwargs}
    return {**m.kwargs, **given}


def _build(c, task) -> nn.Module:
    target = _import(c.model.target)
    try:
        signature = inspect.signature(target)
        arguments = _arguments(c.model, signature, task.input_shape, task.d_out)
    except (TypeError, ValueError):
        arguments = dict(c.model.kwargs)
    try:
        model = instantiate({"_target_": c.model.target, **arguments}, _convert_="all")
    except InstantiationException as error:
        cause = error.__cause__ or error
        raise ConfigError(
            KEY, c.model.target, f"could not be built: {first_line(cause, typed=True)}"
        ) from None
    if not isinstance(model, nn.Module):
        raise ConfigError(KEY, c.model.target, f"built a {type(model).__name__}, not an nn.Module")
    _check_output(model, c, task)
    return model


def _check_output(model: nn.Module, c, task) -> None:
    """Two training examples through the model: its output must be (2, d_out) for the task's loss,
    or (2, seq_len, d_out) for tokens, a prediction at every position."""
    x = task.x_train[:2]
    model.to(x.device)
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad(), autocast(c.trainer.precision, x.device.type):
            training = model.training
            model.eval()
            y = model(x)
            model.train(training)
    except Exception as error:  # noqa: BLE001 (the model's own code failed on the task's input)
        raise ConfigError(
            KEY,
            c.model.target,
            f"fails on task={c.task.name}'s input of shape {tuple(x.shape)}: {first_line(error, typed=True)}",
        ) from None
    if not any(p.requires_grad and p.dim() >= 2 for p in model.parameters()):
        raise ConfigError(
            KEY, c.model.target, "has no trainable weight of two or more dimensions: no layer to record"
        )
    want = (2, *task.y_train.shape[1:], task.d_out) if task.vocab else (2, task.d_out)  # tokens: per position
    if not isinstance(y, torch.Tensor) or tuple(y.shape) != want:
        got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ConfigError(
            KEY,
            c.model.target,
            f"gives an output of shape {got} for an input of shape {tuple(x.shape)}; "
            f"task={c.task.name} needs {want} (its d_out is passed to the model as `d_out`)",
        )


def _describe(model, activation, norm) -> str:
    if isinstance(model, CustomModelConfig):
        target, kwargs = model.target, model.kwargs
    else:  # as summary.json keeps it: the group's keys themselves
        target = model.get("_target_")
        kwargs = {k: v for k, v in model.items() if k not in ("name", "_target_")}
    arguments = ", ".join(f"{k}={v}" for k, v in kwargs.items())
    return f"custom {target}({arguments})"


register(ModelSpec(name="custom", config=None, typed=_typed, build=_build, describe=_describe, check=_check))
