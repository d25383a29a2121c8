"""Check a command line before Hydra runs it, so that every mistake in it is one line.

Hydra reports a missing choice or key with several lines and its config search path, a value
it cannot parse with a traceback, and a sweep with a bad value in its last job fails only after
the other jobs ran. Here each override is parsed and composed first, and the jobs of the grid
are validated until every value has run in one of them (see `grid.py`). What the check finds
out that the CLI needs next (where the run will write, whether it resumes, which overrides a
combination needs forced) comes back as a `Plan`.
"""

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra._internal.utils import get_args_parser  # Hydra's own CLI parser, so flags match exactly
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

from gradexp.config import CONFIG_DIR
from gradexp.config.compose import ComposeOnce
from gradexp.config.errors import NO_VALUE, ConfigError, first_line
from gradexp.config.grid import check_grid, values_of
from gradexp.config.hints import unknown_key_problem
from gradexp.config.seeds import seed_sweep
from gradexp.config.sweeper import grid_sweeper
from gradexp.config.validate import validate
from gradexp.models import MODELS
from gradexp.run_files import is_sweep

# A plugin config of ours -> the Hydra plugin config it extends, and the extra that installs it.
PLUGIN_EXTRAS = {
    "joblib": "joblib",
    "slurm": "slurm",
    "submitit_local": "slurm",
    "ray_local": "ray",
    "optuna": "optuna",
}
_PLUGIN_OF = {"ray": "ray_local", "submitit_slurm": "slurm"}

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


_SHAPING = ("sweep.", "trainer.resume=")  # keys that change what the CLI does, beside the groups


@dataclass
class Plan:
    """What the CLI does next with a command line that passed the check."""

    runs: bool = False  # False for --help, --cfg job and the like: Hydra writes nothing then
    multirun: bool = False
    output_dir: Path | None = None  # the run directory, or the sweep directory
    output_dir_typed: bool = False  # given on the command line (else Hydra's dated default)
    resume: bool = False  # trainer.resume (a run) or sweep.resume (a sweep)
    job: DictConfig | None = None  # the composed config of a single run that resumes
    forced: set[str] = field(default_factory=set)  # overrides a combination needs as ++key=value
    added: list[str] = field(default_factory=list)  # overrides the command line implies (the seeds)
    hydra_mode: RunMode | None = None  # hydra.mode as composed (None: the --multirun flag decides)


def check_command_line(argv: list[str]) -> Plan:
    """Raise ConfigError for the first override that cannot run; otherwise say what will run."""
    args, _ = get_args_parser().parse_known_args(argv)
    if any(getattr(args, flag, None) for flag in _SKIP_FLAGS):
        return Plan()
    overrides = [_parse(line) for line in args.overrides]
    # hydra.searchpath adds config directories (a user's own presets): every compose needs it
    searchpath = [o.input_line for o in overrides if o.key_or_group == "hydra.searchpath"]
    hydra_lines = [
        o.input_line
        for o in overrides
        if o.key_or_group.startswith("hydra") and o.input_line not in searchpath
    ]
    outputs = [o for o in overrides if o.key_or_group in ("hydra.run.dir", "hydra.sweep.dir")]
    for o in outputs:
        if not str(o.value()).strip():
            raise ConfigError(o.key_or_group, "", "empty", "a directory to write the run into")
    overrides = [o for o in overrides if not o.key_or_group.startswith("hydra")]
    _check_multirun_flag(overrides, args.multirun)
    config_name = args.config_name or "config"
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3", job_name="gradexp"):
        loader = GlobalHydra.instance().config_loader()
        group_options, composer = loader.get_group_options, ComposeOnce(loader)
        first = [values[0] for values in (values_of(o, group_options) for o in overrides) if values]
        # Hydra's own config (the launcher, a preset's sweep, the output directory, the resume
        # flags), from the group choices and those flags alone, so that a key only some jobs
        # have (a combination, see grid.py) cannot fail it; a launcher or sweeper that is not
        # installed fails here, with its extra named
        shaping = [line for line in first if "." not in line.partition("=")[0] or line.startswith(_SHAPING)]
        composed = _compose(composer, config_name, searchpath + shaping + hydra_lines, hydra=True)
        _check_launcher(composed.hydra.launcher)
        if args.multirun:
            overrides += _file_sweeps(composed.hydra.sweeper, overrides)
        else:
            _check_not_a_sweep_preset(composed, overrides)
        forced = _check_jobs(composer, config_name, searchpath, overrides, group_options)
        added = seed_sweep(composed, overrides, args.multirun)
        added += grid_sweeper(composed, hydra_lines, args.multirun)
        resuming = not args.multirun and composed.trainer.resume is not None
        # what a checkpoint must match
        job = _compose(composer, config_name, searchpath + first) if resuming else None
    key = "hydra.sweep.dir" if args.multirun else "hydra.run.dir"
    directory = str(composed.hydra.sweep.dir if args.multirun else composed.hydra.run.dir)
    _check_writable(key, directory)
    resume = bool(composed.sweep.resume) if args.multirun else composed.trainer.resume is not None
    if args.multirun and resume:
        _check_resumable_sweep(directory)
    typed = any(o.key_or_group == key for o in outputs)
    mode = composed.hydra.mode
    return Plan(not args.cfg, args.multirun, Path(directory), typed, resume, job, forced, added, mode)


def _check_multirun_flag(overrides: list[Override], multirun: bool) -> None:
    sweep = next((o for o in overrides if o.is_sweep_override()), None)
    if sweep is not None and not multirun:
        key, _, value = sweep.input_line.partition("=")
        raise ConfigError(
            key,
            value,
            "several values need --multirun (-m)",
            "one value, a quoted string ('a,b'), or add -m to sweep",
        )


def _check_jobs(
    composer: ComposeOnce, config_name: str, searchpath: list[str], overrides: list[Override], group_options
) -> set[str]:
    """Validate jobs of the grid until every value has run in one (grid.py); return the
    overrides that combinations need forced."""
    choices = [values_of(o, group_options) for o in overrides]
    for o, values in zip(overrides, choices):
        if values == []:
            raise ConfigError(
                o.key_or_group, _value_text(o), "sweeps no values", "a sweep of at least one value"
            )

    def attempt(job: list[str]) -> ConfigError | None:
        try:
            cfg = _compose(composer, config_name, searchpath + job)
            validate(cfg)
            _check_activation_applies(cfg, job)
        except ConfigError as error:
            return error
        return None

    return check_grid([values for values in choices if values is not None], attempt)


def _parse(line: str) -> Override:
    """One override, or a one-line error that names its key."""
    key, _, value = line.partition("=")
    try:
        [override] = OverridesParser.create().parse_overrides([line])
    except OverrideParseException as error:
        message = first_line(error)  # "LexerNoViableAltException: <the line>", say
        problem = (
            "cannot parse it"
            if key and value
            else f"cannot parse it: {message.partition('Exception: ')[2] or message}"
        )
        raise ConfigError(
            key or "override", value if key else line, problem, _quoting_hint(key, value)
        ) from None
    except ValueError as error:  # Python's limit on integer digits, say
        raise ConfigError(
            key, value, f"cannot read it as a value: {first_line(error).split(';')[0]}"
        ) from None
    return override


def _quoting_hint(key: str, value: str) -> str | None:
    if not key or not value:
        return None
    quoted = value.replace("'", "\\'")
    return f"a value in Hydra's override syntax; text with other characters goes in quotes: {key}='{quoted}'"


def _value_text(o: Override) -> str:
    return o.input_line.partition("=")[2]


def _check_not_a_sweep_preset(composed: DictConfig, overrides: list[Override]) -> None:
    """A preset that declares a grid (its hydra.sweeper.params) is a sweep: without -m Hydra
    would run one job of base values that is not in the grid, and say nothing."""
    params = composed.hydra.sweeper.get("params") or {}
    if not params:
        return
    chosen = next((o for o in overrides if o.key_or_group in ("experiment", "hparams_search")), None)
    key, value = (chosen.key_or_group, _value_text(chosen)) if chosen else ("hydra.sweeper.params", NO_VALUE)
    swept = ", ".join(str(k).lstrip("+~") for k in params)
    raise ConfigError(
        key,
        value,
        f"a sweep preset (it sweeps {swept}); a sweep runs with --multirun (-m)",
        f"gradexp -m {key}={value}" if chosen else "gradexp -m ...",
    )


def _check_resumable_sweep(directory: str) -> None:
    """An existing sweep directory is gone on with only if it is a gradexp sweep."""
    path = Path(directory)
    if path.exists() and any(path.iterdir()) and not is_sweep(path):
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
        raise ConfigError("hydra.sweeper.params", NO_VALUE, f"cannot parse it: {first_line(error)}") from None


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


def _compose(
    composer: ComposeOnce, config_name: str, overrides: list[str], hydra: bool = False
) -> DictConfig:
    """Hydra's `compose`, by a composer that reuses an earlier job's config where only plain
    values differ (the grid's jobs mostly)."""
    try:
        cfg = composer.compose(config_name, overrides, from_shell=False)
        if not hydra:
            with open_dict(cfg):
                del cfg["hydra"]
        return cfg
    except MissingConfigException as error:
        raise _missing_choice(error, config_name) from None
    except ConfigCompositionException as error:
        cause = error.__cause__
        key = getattr(cause, "full_key", None)
        if key and ("not in struct" in str(cause) or "Could not override" in str(error)):
            known = _siblings(config_name, overrides, key)
            problem = unknown_key_problem(key, known)
            failure = ConfigError(key, NO_VALUE, problem, ", ".join(known) or None)
            failure.at_compose = True  # Hydra could not build the job at all (see grid.py)
            raise failure from None
        raise ConfigError("override", NO_VALUE, first_line(cause or error)) from None
    except ValueError as error:  # a config file Hydra cannot read (a preset someone wrote, say)
        raise ConfigError(config_name, NO_VALUE, f"cannot compose it: {first_line(error)}") from None


def _missing_choice(error: MissingConfigException, config_name: str) -> ConfigError:
    """A choice with no config file: one the user mistyped, or a plugin whose extra is missing
    (our `ray_local` extends the Ray plugin's `ray`, which only `.[ray]` installs)."""
    group, _, choice = (error.missing_cfg_file or "").rpartition("/")
    if not group or error.options is None:
        if group.startswith("hydra/") and _PLUGIN_OF.get(choice, choice) in PLUGIN_EXTRAS:
            ours = _PLUGIN_OF.get(choice, choice)
            return _plugin_missing(group, ours)
        return ConfigError(config_name, NO_VALUE, first_line(error))
    if group.startswith("hydra/") and choice in PLUGIN_EXTRAS:
        return _plugin_missing(group, choice)
    allowed = ", ".join(error.options)
    if group.startswith("hydra/"):  # a launcher or sweeper plugin, maybe not installed
        extras = ", ".join(f"{choice}: [{extra}]" for choice, extra in PLUGIN_EXTRAS.items())
        allowed += f" (more with gradexp's extras, {extras}: {install_hint('<extra>')})"
    return ConfigError(group, choice, "no such choice", allowed)


def _plugin_missing(group: str, choice: str) -> ConfigError:
    return ConfigError(
        group, choice, f"its Hydra plugin is not installed: {install_hint(PLUGIN_EXTRAS[choice])}"
    )


def install_hint(extra: str) -> str:
    """How to add one of gradexp's extras: from the checkout it runs from, when it runs from one.
    Not `pip install gradexp[...]`: gradexp is not on PyPI, where that name is another project's."""
    root = CONFIG_DIR.parent
    if (root / "pyproject.toml").is_file():
        return f"pip install -e '{root}[{extra}]'"
    return f"install gradexp again with its '{extra}' extra, from where you installed it (gradexp[{extra}])"


def _siblings(config_name: str, overrides: list[str], key: str) -> list[str]:
    """The keys that do exist beside an unknown one, from the config composed without the key
    overrides (another of which may be unknown too); none if even that fails."""
    parent = key.rpartition(".")[0]
    groups = set(GlobalHydra.instance().config_loader().list_groups(""))
    choices = [o for o in overrides if o.partition("=")[0] in groups or o.startswith("hydra.")]
    try:
        node = compose(config_name, overrides=choices)
    except Exception:  # noqa: BLE001 (a hint, not the error: the error is reported either way)
        return []
    node = node.get(parent) if parent else node
    return [str(k) for k in node] if isinstance(node, DictConfig) else []


def _check_activation_applies(cfg: DictConfig, job: list[str]) -> None:
    """An activation chosen for a model that reads no activation group would change nothing."""
    chosen = next((o for o in job if o.split("=")[0].split(".")[0].lstrip("+~") == "activation"), None)
    name = cfg.model.name
    if chosen and name in MODELS and "activation" not in MODELS[name].groups:
        where = MODELS[name].nonlinearity
        raise ConfigError(
            chosen.split("=")[0].lstrip("+~"),
            chosen.partition("=")[2],
            f"applies to model=mlp; {where[0]}",
            where[1],
        )
