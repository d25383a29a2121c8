"""Check a composed config before anything is built: types against the schemas, then ranges and
combinations. Every failure is a ConfigError naming the key, the value and what is allowed;
code after this point trusts the config."""

import dataclasses
import functools
import math
import re
import typing

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from gradexp.activations import ACTIVATIONS
from gradexp.config.checks import at_least, choice, fraction, positive, require
from gradexp.config.errors import NO_VALUE, ConfigError
from gradexp.config.hints import unknown_key_problem
from gradexp.config.schema import GROUP_SCHEMAS, RunConfig
from gradexp.custom_data import EXAMPLE, LOSSES
from gradexp.datasets import SOURCES
from gradexp.device import device_problem, host_memory_bytes, resolve_device
from gradexp.importing import import_callable
from gradexp.initializers import INITIALIZERS, KAIMING_MODES, KAIMING_NONLINEARITIES
from gradexp.models import MODELS
from gradexp.norms import NORMS
from gradexp.optim import OPTIMIZERS, SCHEDULERS
from gradexp.precision import AUTOCAST_DTYPES, LOSS_SCALE_MODES, precision_problem, resolved_loss_scale
from gradexp.sweeps.objective import OBJECTIVES
from gradexp.tasks import MAX_CONTEXTS, TASKS, data_shape

GROUPS = ("model", *GROUP_SCHEMAS)
EVAL_CHUNK = 1024  # examples per forward pass when the engine evaluates a split (and the memory check counts)
FLOAT32_MAX = 3.4028234663852886e38  # torch.finfo(torch.float32).max
MAX_SEED = 2**32 - 1  # what every seeding API (torch, numpy) accepts


def validate(cfg: DictConfig) -> RunConfig:
    """Return the typed config, or raise ConfigError for the first thing wrong with it."""
    unknown = [key for key in cfg if key not in GROUPS] if isinstance(cfg, DictConfig) else []
    if unknown:
        raise ConfigError(
            str(unknown[0]), NO_VALUE, unknown_key_problem(str(unknown[0]), list(GROUPS)), ", ".join(GROUPS)
        )
    typed = RunConfig(**{group: _typed_group(cfg, group) for group in GROUPS})
    _check_finite(typed)
    _check_choices(typed)
    _check_ranges(typed)
    _check_combinations(typed)
    return typed


@functools.cache
def _schema_node(schema: type) -> DictConfig:
    """A group's schema as an OmegaConf node, made once per process: `OmegaConf.merge` copies
    its first config and never changes it, and making it was half of validating a job's config."""
    return OmegaConf.structured(schema)


def _typed_group(cfg: DictConfig, group: str):
    node = cfg.get(group) if isinstance(cfg, DictConfig) else None
    if not isinstance(node, DictConfig):
        raise ConfigError(group, NO_VALUE, "missing", ", ".join(_group_choices(group)))
    if group == "model":
        name = node.get("name")
        choice("model", name, MODELS)
        if MODELS[name].typed is not None:
            return MODELS[name].typed(node)
        schema = MODELS[name].config
    else:
        schema = GROUP_SCHEMAS[group]
    _check_nested_mappings(schema, node, group)
    try:
        merged = OmegaConf.merge(_schema_node(schema), node)
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as error:
        path = str(error.full_key or "")
        key = f"{group}.{path}" if path else group
        field_type = _field_type(schema, path) if path else None
        if isinstance(error, ConfigKeyError) or field_type is None:
            keys = [f.name for f in dataclasses.fields(schema)]
            raise ConfigError(key, NO_VALUE, unknown_key_problem(key, keys), ", ".join(keys)) from None
        raise ConfigError(key, _raw_value(node, path), "wrong type", _describe(field_type)) from None


def _check_nested_mappings(schema, node: DictConfig, prefix: str) -> None:
    """A nested mapping (trainer.clip) given a plain value: OmegaConf's own error names no key."""
    for name, field_type in typing.get_type_hints(schema).items():
        if dataclasses.is_dataclass(field_type) and name in node:
            value = node.get(name)
            if not isinstance(value, DictConfig):
                raise ConfigError(f"{prefix}.{name}", value, "wrong type", _describe(field_type))
            _check_nested_mappings(field_type, value, f"{prefix}.{name}")


def _raw_value(node: DictConfig, path: str):
    """The value as written, before interpolation, so `${typo}` is shown as typed."""
    value = OmegaConf.to_container(node, resolve=False)
    for token in re.findall(r"[^.\[\]]+", path):
        value = value[int(token)] if isinstance(value, list) else value.get(token)
    return value


def _group_choices(group: str) -> list[str]:
    registry = {"model": MODELS, **_REGISTRIES}.get(group)
    return sorted(registry) if registry else []


def _field_type(schema, path: str):
    """The annotated type of a (possibly nested) field, or None if there is no such field;
    `betas[1]` is the type of betas' elements."""
    for part in path.split("."):
        name, index = re.fullmatch(r"([^\[]*)(\[\d+\])?", part).groups()
        hints = typing.get_type_hints(schema) if dataclasses.is_dataclass(schema) else {}
        if name not in hints:
            return None
        schema = hints[name]
        if index:
            schema = typing.get_args(schema)[0]
    return schema


def _describe(field_type) -> str:
    args = typing.get_args(field_type)
    if type(None) in args:
        inner = [a for a in args if a is not type(None)][0]
        return f"{_describe(inner)} or null"
    if typing.get_origin(field_type) in (list, list):
        return f"a list of {_describe(args[0]).removeprefix('a ').removeprefix('an ')}s"
    if dataclasses.is_dataclass(field_type):
        return "a mapping with keys " + ", ".join(f.name for f in dataclasses.fields(field_type))
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    return names.get(field_type, str(field_type))


_REGISTRIES = {
    "activation": ACTIVATIONS,
    "init": INITIALIZERS,
    "norm": NORMS,
    "optimizer": OPTIMIZERS,
    "scheduler": SCHEDULERS,
    "task": TASKS,
}


def _check_choices(c: RunConfig) -> None:
    for group, registry in _REGISTRIES.items():
        choice(group, getattr(c, group).name, registry)
    choice("objective.metric", c.objective.metric, OBJECTIVES)
    choice("trainer.precision", c.trainer.precision, AUTOCAST_DTYPES)
    if c.init.name.startswith("kaiming"):
        choice("init.mode", c.init.mode, KAIMING_MODES)
        choice("init.nonlinearity", c.init.nonlinearity, KAIMING_NONLINEARITIES)


def _check_ranges(c: RunConfig) -> None:
    MODELS[c.model.name].check(c)
    at_least(c, "activation", "alpha", 0.0)
    _check_init_ranges(c)
    _check_optimizer_ranges(c)
    for key in ("step_size",):
        at_least(c, "scheduler", key, 1)
    positive(c, "scheduler", "gamma")
    require(
        c.scheduler.t_max is None or c.scheduler.t_max >= 1,
        "scheduler.t_max",
        c.scheduler.t_max,
        "an integer >= 1 or null",
    )
    at_least(c, "scheduler", "eta_min", 0.0)
    at_least(c, "scheduler", "warmup_steps", 0)
    warmup, steps = c.scheduler.warmup_steps, c.trainer.steps
    require(  # a trainer.steps < 1 is trainer.steps' own mistake, reported below
        steps < 1 or warmup < steps,
        "scheduler.warmup_steps",
        warmup,
        f"an integer < trainer.steps ({steps}), so that the warmup ends before the run does",
    )
    for key in ("n_train", "n_val", "d_in", "d_out", "teacher_width"):
        at_least(c, "task", key, 1)
    at_least(c, "task", "n_classes", 2)
    at_least(c, "task", "seq_len", 2)
    at_least(c, "task", "separation", 0.0)
    at_least(c, "task", "noise", 0.0)
    _check_task_shapes(c)
    for key in ("steps", "batch_size", "grad_accum", "log_every", "eval_every"):
        at_least(c, "trainer", key, 1)
    require(0 <= c.trainer.seed <= MAX_SEED, "trainer.seed", c.trainer.seed, f"an integer in [0, {MAX_SEED}]")
    every = c.trainer.checkpoint_every
    require(every is None or every >= 1, "trainer.checkpoint_every", every, "an integer >= 1 or null")
    _check_loss_scale(c.trainer.loss_scale)
    threads = c.trainer.threads
    require(threads is None or threads >= 1, "trainer.threads", threads, "an integer >= 1 or null")
    workers = c.trainer.workers
    require(workers is None or workers >= 0, "trainer.workers", workers, "an integer >= 0 or null")
    if workers is not None and c.task.name != "custom":
        raise ConfigError(
            "trainer.workers",
            workers,
            f"task={c.task.name} lives in memory; only task=custom's datasets stream",
            "null",
        )
    for key in ("max_norm", "value"):
        value = getattr(c.trainer.clip, key)
        require(value is None or value > 0, f"trainer.clip.{key}", value, "a number > 0 or null")
    for key in ("every", "histograms_every"):
        value = getattr(c.diagnostics, key)
        require(value is None or value >= 1, f"diagnostics.{key}", value, "an integer >= 1 or null")
    require(
        0 < c.diagnostics.saturation_fraction < 1,
        "diagnostics.saturation_fraction",
        c.diagnostics.saturation_fraction,
        "a number in (0, 1)",
    )


def _check_task_shapes(c: RunConfig) -> None:
    for key in ("channels", "size"):
        at_least(c, "task", key, 1)
    at_least(c, "task", "shift", 0)
    at_least(c, "task", "vocab", 2)
    at_least(c, "task", "order", 1)
    at_least(c, "task", "sharpness", 0.0)
    if c.task.name == "custom":
        choice("task.loss", c.task.loss, LOSSES)
        outputs = c.task.outputs
        require(outputs is None or outputs >= 1, "task.outputs", outputs, "an integer >= 1 or null")
        if not c.task._target_:
            raise ConfigError(
                "task._target_", NO_VALUE, "missing: task=custom trains on what it returns", EXAMPLE
            )
        import_callable(c.task._target_, "task._target_", EXAMPLE)  # imported now, called once the run starts
    source = SOURCES.get(c.task.name)
    if source is not None:  # a published dataset: its splits have the sizes they have
        require(
            c.task.n_train <= source.n_train,
            "task.n_train",
            c.task.n_train,
            f"an integer in [1, {source.n_train}]",
        )
        require(
            c.task.n_val <= source.n_test, "task.n_val", c.task.n_val, f"an integer in [1, {source.n_test}]"
        )
    if c.task.name == "tokens":
        require(
            c.task.vocab**c.task.order <= MAX_CONTEXTS,
            "task.order",
            c.task.order,
            f"an integer with task.vocab ** task.order <= {MAX_CONTEXTS} (the source's contexts)",
        )


def _check_init_ranges(c: RunConfig) -> None:
    at_least(c, "init", "std", 0.0)
    at_least(c, "init", "gain", 0.0)
    require(c.init.low < c.init.high, "init.high", c.init.high, f"a number > init.low ({c.init.low})")


def _check_optimizer_ranges(c: RunConfig) -> None:
    positive(c, "optimizer", "lr")
    at_least(c, "optimizer", "weight_decay", 0.0)
    fraction(c, "optimizer", "momentum")
    fraction(c, "optimizer", "alpha")
    positive(c, "optimizer", "eps")
    at_least(c, "optimizer", "lr_decay", 0.0)
    betas = c.optimizer.betas
    require(
        len(betas) == 2 and all(0 <= b < 1 for b in betas), "optimizer.betas", betas, "two numbers in [0, 1)"
    )
    if c.optimizer.name in ("adam", "adamw"):  # the first step divides lr by 1 - beta1
        largest = FLOAT32_MAX * (1 - betas[0])
        require(
            c.optimizer.lr <= largest,
            "optimizer.lr",
            c.optimizer.lr,
            f"a number <= {largest:.4g} with betas[0] = {betas[0]} (Adam's first step is lr / (1 - beta1), "
            "which must stay within float32)",
        )
    if c.optimizer.name == "nesterov":
        require(
            c.optimizer.momentum > 0,
            "optimizer.momentum",
            c.optimizer.momentum,
            "a number in (0, 1) for nesterov",
        )


def _check_finite(c: RunConfig) -> None:
    """No config number may be NaN or infinite, nor beyond float32's range: the weights and the
    optimizer's state are float32, and 1e300 would become infinity in the first step."""
    for group in GROUPS:
        for key, value in _numbers(getattr(c, group), group):
            if not math.isfinite(value):
                raise ConfigError(key, value, "not a finite number", "a finite number")
            if abs(value) > FLOAT32_MAX:
                raise ConfigError(
                    key, value, "out of range", f"a number of magnitude at most {FLOAT32_MAX:.4g}"
                )


def _check_loss_scale(value) -> None:
    allowed = f"{', '.join(LOSS_SCALE_MODES)}, a number > 0 or null (dynamic for fp16, none otherwise)"
    if value is None or value in LOSS_SCALE_MODES:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError("trainer.loss_scale", value, "no such choice", allowed)
    require(0 < value <= FLOAT32_MAX, "trainer.loss_scale", value, allowed)


def _numbers(node, prefix: str):
    for f in dataclasses.fields(node):
        value, key = getattr(node, f.name), f"{prefix}.{f.name}"
        if dataclasses.is_dataclass(value):
            yield from _numbers(value, key)
        elif isinstance(value, float):
            yield key, value
        elif isinstance(value, list):
            yield from ((f"{key}[{i}]", v) for i, v in enumerate(value) if isinstance(v, float))


def _check_combinations(c: RunConfig) -> None:
    reads = MODELS[c.model.name].tasks
    if reads is not None and c.task.name not in reads:
        raise ConfigError(
            "task",
            c.task.name,
            f"model={c.model.name} cannot read this task's data",
            ", ".join(f"task={name}" for name in reads) + f" with model={c.model.name}",
        )
    if "norm" not in MODELS[c.model.name].groups and c.norm.name != "none":
        raise ConfigError(
            "norm",
            c.norm.name,
            f"not supported with model={c.model.name} "
            "(the norm group sits before the activations of model=mlp and model=cnn)",
            "none",
        )
    if c.norm.name == "batchnorm":
        require(
            c.trainer.batch_size >= 2,
            "trainer.batch_size",
            c.trainer.batch_size,
            "an integer >= 2 with norm=batchnorm (it normalizes over the batch)",
        )
    require(
        c.task.name == "custom" or c.trainer.batch_size <= c.task.n_train,  # custom: checked once loaded
        "trainer.batch_size",
        c.trainer.batch_size,
        f"an integer <= task.n_train ({c.task.n_train})",
    )
    problem = device_problem(c.trainer.device)
    if problem is not None:
        raise ConfigError("trainer.device", c.trainer.device, *problem)
    t = c.trainer
    problem = precision_problem(t.precision, t.loss_scale, resolve_device(t.device))
    if problem is not None:
        key, why, allowed = problem
        value = t.precision if key == "trainer.precision" else resolved_loss_scale(t.precision, t.loss_scale)
        raise ConfigError(key, value, why, allowed)
    _check_fits_in_memory(c)


BYTES_PER_PARAMETER = 16  # float32 weight, gradient and two optimizer moments (Adam's)


def _check_fits_in_memory(c: RunConfig) -> None:
    """A run whose model, data or activations could never fit in the machine's memory is
    refused here, in one line naming the key that makes it so: built, it would fail with a
    traceback from the allocator, or build layers until the machine runs out of memory. (On a
    GPU with less memory than the machine, a run can still run out of the GPU's.)"""
    limit, shapes = host_memory_bytes(), data_shape(c.task)
    if limit is None or shapes is None:  # task=custom: its data is in memory before the model is built
        return
    input_shape, outputs = shapes
    parts = [  # (the key that drives the part, its bytes)
        (
            _largest(c, "task", ("n_train", "n_val", "d_in", "seq_len", "size")),
            4 * (c.task.n_train + c.task.n_val) * (math.prod(input_shape) + outputs),
        ),
    ]
    size_of = MODELS[c.model.name].size
    if size_of is not None:  # a custom model's size is known once it is built
        size = size_of(c, input_shape, outputs)
        per_step = max(c.trainer.batch_size, min(c.task.n_val, EVAL_CHUNK))
        model_key = _largest(c, "model", size.keys)
        parts += [
            (model_key, BYTES_PER_PARAMETER * size.parameters),
            # activations, their gradients and the diagnostics' copies: a batch's rows by its units
            ("trainer.batch_size" if per_step >= size.units else model_key, 16 * per_step * size.units),
        ]
    total = sum(size for _, size in parts)
    if total > limit:
        key = max(parts, key=lambda part: part[1])[0]
        group, _, name = key.partition(".")
        value = getattr(getattr(c, group), name)
        raise ConfigError(
            key,
            value,
            f"out of range: the run would need about {_bytes(total)} of memory; "
            f"this machine has {_bytes(limit)}",
            "a model, a data set and a batch that fit in memory",
        )


def _largest(c: RunConfig, group: str, names: tuple[str, ...]) -> str:
    """The key, of those named, with the largest value: the one that makes a part large."""
    node = getattr(c, group)
    return f"{group}.{max(names, key=lambda n: getattr(node, n))}"


def _bytes(count: int) -> str:
    if count >= 1024**6:
        return f"10^{len(str(count)) - 1} bytes"
    for unit, size in (("PiB", 1024**5), ("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2)):
        if count >= size:
            return f"{count / size:.3g} {unit}"
    return f"{count} bytes"
