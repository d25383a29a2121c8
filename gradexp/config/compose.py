"""Each job of a sweep composed in milliseconds instead of a tenth of a second.

Hydra's launchers compose every job's config from scratch (`load_sweep_config`: the defaults
list, every YAML file, the merges), about 0.1 s a job on a laptop core. The jobs of a grid
mostly differ in plain values (`model.depth=3` against `model.depth=5`), which Hydra applies
last, onto the config it composed, with `OmegaConf.update`. So a job whose overrides differ
from an earlier job's only in such values is made from that job's config: copied, its values
applied by Hydra's own function, and the fields Hydra derives from the overrides written again.
Anything else (a group choice, `+key`, `~key`, a dict or list value, a `hydra.` key) must be
the same for two jobs to share a config, so a new one is composed by Hydra. The result is
Hydra's own, field for field: tests/test_compose.py checks it against Hydra's compose.

The configs are kept per process (the sweep's, or each joblib worker's), per sweep.

Before it runs or sweeps, Hydra also composes the whole config once only to read `hydra.mode`
(`Hydra.get_mode`), and then again to run: `mode_known` answers it from the config the CLI's
preflight composed: every command starts its run or sweep about 0.1 s sooner.
"""

import contextlib
import copy
import os
import uuid
from collections.abc import Iterator

from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
from hydra._internal.hydra import Hydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, ValueType
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

_COMPOSED: dict[tuple, DictConfig] = {}  # (sweep, shape of the overrides) -> a job's config, as composed
_KEPT = 64  # configs kept, the latest used: a grid over group choices has one per combination


class ComposeOnce:
    """Hydra's config loader, with `load_sweep_config` (a launcher's) and `compose` (gradexp's
    preflight) reusing an earlier config where the overrides allow (see the module's
    docstring); everything else is the loader's own."""

    def __init__(self, loader: ConfigLoaderImpl):
        self.loader = loader
        self.sweep = uuid.uuid4().hex  # a joblib worker may outlive one sweep: keep theirs apart

    def __getattr__(self, name: str):
        if name.startswith("__") or "loader" not in self.__dict__:  # pickling, before __init__
            raise AttributeError(name)
        return getattr(self.loader, name)

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        """Hydra's `load_sweep_config`: the job's config, with the sweep's Hydra overrides and the
        sweep's resolved values (its `${now:...}`, say)."""
        overrides = [*master_config.hydra.overrides.hydra, *sweep_overrides]
        config = self.compose(str(master_config.hydra.job.config_name), overrides)
        OmegaConf.copy_cache(from_config=master_config, to_config=config)
        return config

    def compose(self, config_name: str, overrides: list[str], from_shell: bool = True) -> DictConfig:
        """Hydra's `load_configuration` for one run (`from_shell=False`: as `hydra.compose` calls
        it), made from an earlier config of the same shape where there is one."""
        parsed = OverridesParser.create().parse_overrides(overrides=list(overrides))
        values = [o for o in parsed if self._is_value(o)]
        if _overlapping([o.key_or_group for o in parsed if not o.is_hydra_override()]):
            values = []  # the order of the overrides decides: Hydra applies them all, in order
        shape = tuple(o.key_or_group if any(o is v for v in values) else o.input_line for o in parsed)
        key = (self.sweep, config_name, from_shell, shape)
        composed = _COMPOSED.pop(key, None)
        if composed is not None:
            _COMPOSED[key] = composed  # the latest used, the last evicted
        if composed is None or _choices_among(values, composed):
            config = self.loader.load_configuration(config_name, list(overrides), RunMode.RUN, from_shell)
            _COMPOSED[key] = copy.deepcopy(config)  # the caller goes on to change the one it gets
            if len(_COMPOSED) > _KEPT:
                del _COMPOSED[next(iter(_COMPOSED))]
            return config
        config = copy.deepcopy(composed)
        ConfigLoaderImpl._apply_overrides_to_config(values, config)
        task = [o for o in parsed if not o.is_hydra_override()]
        config.hydra.overrides.task = [o.input_line for o in task]
        names = config.hydra.job.config.override_dirname
        config.hydra.job.override_dirname = get_overrides_dirname(
            overrides=task, kv_sep=names.kv_sep, item_sep=names.item_sep, exclude_keys=names.exclude_keys
        )
        config.hydra.runtime.cwd = os.getcwd()
        return config

    def _is_value(self, o: Override) -> bool:
        """A plain `key=value` with one scalar value, for a key that is not a config group: what
        Hydra applies onto the composed config rather than composing with. (A group that only a
        `hydra.searchpath` directory holds is not in this repository: `_choices_among` catches
        it, among the choices of the config composed.)"""
        return (
            not (o.is_add() or o.is_force_add() or o.is_delete() or o.is_hydra_override())
            and o.package is None
            and o.value_type == ValueType.ELEMENT
            and not isinstance(o.value(), (dict, list))
            and not self.loader.repository.group_exists(o.key_or_group.replace(".", "/"))
        )


@contextlib.contextmanager
def mode_known(mode: RunMode | None) -> Iterator[None]:
    """Within it, Hydra's `get_mode` is `mode`: the `hydra.mode` of the config as composed (by
    the preflight, from the same `hydra.` overrides and group choices), not composed again."""
    get_mode = Hydra.get_mode
    Hydra.get_mode = lambda self, config_name, overrides: mode
    try:
        yield
    finally:
        Hydra.get_mode = get_mode


def _overlapping(keys: list[str]) -> bool:
    """Two overrides of one key, or of a key and one inside it (`trainer.clip=null` beside
    `trainer.clip.max_norm=1`)."""
    return any(
        a == b or a.startswith(b + ".") or b.startswith(a + ".") for i, a in enumerate(keys) for b in keys[:i]
    )


def _choices_among(values: list[Override], composed: DictConfig) -> bool:
    """Whether a `value` is in fact a config group's choice in the config composed."""
    choices = composed.hydra.runtime.choices
    return any(o.key_or_group in choices or o.key_or_group.replace(".", "/") in choices for o in values)
