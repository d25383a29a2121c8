"""Check a command line before Hydra runs it, so that every mistake in it is one line.

Hydra reports a missing choice or key with several lines and its config search path, and a
sweep with a bad value in its last job fails only after the other jobs ran. Here each override
is composed and validated first: the base job (the first value of every sweep), then each other
value of each sweep in turn.
"""

import tempfile
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra._internal.utils import get_args_parser  # Hydra's own CLI parser, so flags match exactly
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, ValueType
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf

from gradexp.config import CONFIG_DIR
from gradexp.config.errors import NO_VALUE, ConfigError
from gradexp.config.validate import validate

PLUGIN_GROUPS = ("hydra/launcher", "hydra/sweeper")
PLUGIN_EXTRAS = {"joblib": "joblib", "slurm": "slurm", "ray_local": "ray", "optuna": "optuna"}

# Flags after which Hydra composes no job config, or composes one from elsewhere.
_SKIP_FLAGS = (
    "help",
    "hydra_help",
    "version",
    "shell_completion",
    "info",
    "config_path",
    "config_dir",
    "experimental_rerun",
)


def check_command_line(argv: list[str]) -> None:
    """Raise ConfigError for the first override that cannot run; return quietly otherwise."""
    args, _ = get_args_parser().parse_known_args(argv)
    if any(getattr(args, flag, None) for flag in _SKIP_FLAGS):
        return
    try:
        overrides = OverridesParser.create().parse_overrides(args.overrides)
    except OverrideParseException as error:
        raise ConfigError("override", NO_VALUE, f"cannot parse it: {_first_line(error)}") from None
    plugins = [
        o.input_line
        for o in overrides
        if o.key_or_group in PLUGIN_GROUPS or o.key_or_group.startswith(("hydra.launcher.", "hydra.sweeper."))
    ]
    # hydra.searchpath adds config directories (a user's own presets): every compose needs it
    searchpath = [o.input_line for o in overrides if o.key_or_group == "hydra.searchpath"]
    outputs = [o.input_line for o in overrides if o.key_or_group in ("hydra.run.dir", "hydra.sweep.dir")]
    overrides = [o for o in overrides if not o.key_or_group.startswith("hydra")]
    sweep = next((o for o in overrides if o.is_sweep_override()), None)
    if sweep is not None and not args.multirun:
        raise ConfigError(
            sweep.input_line.partition("=")[0],
            sweep.input_line.partition("=")[2],
            "several values need --multirun (-m)",
            "one value, a quoted string ('a,b'), or add -m to sweep",
        )
    config_name = args.config_name or "config"
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3", job_name="gradexp"):
        # the base job with Hydra's own config, once: the launcher, a preset's sweep, the output
        # directory (a launcher or sweeper that is not installed fails here, with its extra named)
        base = [values[0] for values in map(_values, overrides) if values]
        composed = _compose(config_name, searchpath + base + plugins + outputs, hydra=True)
        _check_launcher(composed.hydra.launcher)
        if args.multirun:
            overrides += _file_sweeps(composed.hydra.sweeper, overrides)
        for job in _jobs(overrides):
            cfg = _compose(config_name, searchpath + job)
            validate(cfg)
            _check_activation_applies(cfg, job)
        if args.multirun:
            _check_writable("hydra.sweep.dir", str(composed.hydra.sweep.dir))
            _check_sweep_dir(str(composed.hydra.sweep.dir), composed.sweep.resume)
        else:
            _check_writable("hydra.run.dir", str(composed.hydra.run.dir))


def _check_sweep_dir(directory: str, resume: bool) -> None:
    """A sweep never writes over another: an existing sweep directory is gone on with only when
    asked (sweep.resume=true), and only if it is a gradexp sweep."""
    path = Path(directory)
    if not resume:
        if path.is_dir() and any(path.iterdir()):
            raise ConfigError(
                "hydra.sweep.dir",
                directory,
                "already holds files",
                "a new directory, or sweep.resume=true to go on with the sweep in it",
            )
        return
    try:
        job_name = OmegaConf.load(path / "multirun.yaml").hydra.job.name
    except Exception:  # noqa: BLE001 (missing or unreadable: not a sweep gradexp can go on with)
        job_name = None
    if path.exists() and job_name != "gradexp":
        raise ConfigError(
            "hydra.sweep.dir", directory, "not a gradexp sweep (no gradexp multirun.yaml in it)"
        )


def _check_writable(key: str, directory: str) -> None:
    """The run or sweep directory must be one gradexp can create: Hydra would report a failure
    to create it with a traceback, after composing the job. Nothing is created here: the test
    directory made in its nearest existing parent is removed at once."""
    parent = Path(directory).absolute()
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(
            key, directory, f"cannot be created: {parent} is a file", "a directory you can write to"
        )
    try:
        Path(tempfile.mkdtemp(prefix=".gradexp-check-", dir=parent)).rmdir()
    except OSError as error:
        problem = f"cannot be created in {parent}: {error.strerror}"
        raise ConfigError(key, directory, problem, "a directory you can write to") from None


def _file_sweeps(sweeper: DictConfig, overrides: list[Override]) -> list[Override]:
    """The sweeps a config file declares (an experiment's hydra.sweeper.params), for the keys the
    command line leaves alone, so that their values are checked like typed ones."""
    params = sweeper.get("params") or {}
    typed = {o.key_or_group for o in overrides}
    lines = [f"{key}={value}" for key, value in params.items() if key.lstrip("+~") not in typed]
    try:
        return OverridesParser.create().parse_overrides(lines)
    except OverrideParseException as error:
        raise ConfigError(
            "hydra.sweeper.params", NO_VALUE, f"cannot parse it: {_first_line(error)}"
        ) from None


def _check_launcher(launcher: DictConfig) -> None:
    """A launcher that would run jobs as threads of one process is refused: jobs would share the
    seed, the thread count and the CUDA counters that each one sets for itself."""
    if launcher.get("prefer") == "threads" or launcher.get("backend") == "threading":
        key = "prefer" if launcher.get("prefer") == "threads" else "backend"
        raise ConfigError(
            f"hydra.launcher.{key}",
            launcher.get(key),
            "jobs would run as threads of one process and share its torch state",
            "prefer=processes and a process backend (loky, the default)",
        )


def _jobs(overrides: list[Override]) -> list[list[str]]:
    """Override lists that between them try every value of every sweep at least once."""
    choices = [_values(o) for o in overrides]
    base = [values[0] for values in choices if values]
    jobs = [base]
    position = 0
    for values in choices:
        if not values:
            continue
        for other in values[1:]:
            jobs.append(base[:position] + [other] + base[position + 1 :])
        position += 1
    return jobs


def _values(o: Override) -> list[str]:
    """Each value the override can take, as 'key=value'; none for a sweep Hydra's sweeper
    expands itself (interval, glob), whose key keeps its config value here."""
    if o.is_delete() or not o.is_sweep_override():
        return [o.input_line]
    if o.value_type in (ValueType.INTERVAL_SWEEP, ValueType.GLOB_CHOICE_SWEEP):
        return []
    key = o.get_key_element()
    return [f"{key}={Override._get_value_element_as_str(v)}" for v in o.sweep_iterator()]


def _compose(config_name: str, overrides: list[str], hydra: bool = False) -> DictConfig:
    try:
        return compose(config_name, overrides=overrides, return_hydra_config=hydra)
    except MissingConfigException as error:
        group, _, choice = (error.missing_cfg_file or "").rpartition("/")
        if group and error.options is not None:
            allowed = ", ".join(error.options)
            if group.startswith("hydra/"):  # a launcher or sweeper plugin, maybe not installed
                extras = ", ".join(f"{c}: pip install 'gradexp[{e}]'" for c, e in PLUGIN_EXTRAS.items())
                allowed += f" (plugins: {extras})"
            raise ConfigError(group, choice, "no such choice", allowed) from None
        raise ConfigError(config_name, NO_VALUE, _first_line(error)) from None
    except ConfigCompositionException as error:
        cause = error.__cause__
        key = getattr(cause, "full_key", None)
        if key and "not in struct" in str(cause):
            raise ConfigError(key, NO_VALUE, "no such key", _siblings(config_name, overrides, key)) from None
        raise ConfigError("override", NO_VALUE, _first_line(cause or error)) from None
    except ValueError as error:  # a config file Hydra cannot read (a preset someone wrote, say)
        raise ConfigError(config_name, NO_VALUE, f"cannot compose it: {_first_line(error)}") from None


def _siblings(config_name: str, overrides: list[str], key: str) -> str:
    """The keys that do exist beside an unknown one, from the config with the same group choices
    but none of the key overrides (another of which may be unknown too); none if even that fails."""
    parent = key.rpartition(".")[0]
    choices = [o for o in overrides if "." not in o.partition("=")[0] or o.startswith("hydra.")]
    try:
        node = compose(config_name, overrides=choices)
    except Exception:  # noqa: BLE001 (a hint, not the error: the error is reported either way)
        return ""
    node = node.get(parent) if parent else node
    return ", ".join(str(k) for k in node) if isinstance(node, DictConfig) else ""


def _check_activation_applies(cfg: DictConfig, job: list[str]) -> None:
    chosen = next((o for o in job if o.split("=")[0].split(".")[0] == "activation"), None)
    if chosen and cfg.model.name == "rnn":
        raise ConfigError(
            chosen.split("=")[0],
            chosen.partition("=")[2],
            "applies to model=mlp; an RNN's nonlinearity is model.cell",
            "model.cell=rnn_tanh, rnn_relu, lstm, gru",
        )


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0]
