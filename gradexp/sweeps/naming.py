"""Readable names for a sweep's job directories, which TensorBoard shows as run names: the job's
number, then the overrides that vary across the sweep (`003_activation=tanh,model.depth=20`)
rather than Hydra's bare `0`, `1`, `2`.

Hydra's `override_dirname` lists every override of a job; the keys the command line fixes for
all jobs (`trainer.steps=100`, `experiment=...`) are excluded from it here, so what is left is
what varies, including the parameters an experiment file sweeps.
"""

import hashlib

from hydra._internal.utils import get_args_parser
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import OverrideParseException
from omegaconf import OmegaConf

RESOLVER = "gradexp_job_dir"
EXCLUDE_KEY = "hydra.job.config.override_dirname.exclude_keys"
MAX_NAME = 120  # bytes; longer names end in a hash so they stay unique and legal


def job_dir_name(num: object, varying: str) -> str:
    """`<num>_<varying overrides>`, the number zero-padded so that a listing sorts in job order."""
    name = f"{int(num):03d}"
    if varying:
        name += "_" + varying.replace("/", "-")
    if len(name.encode()) > MAX_NAME:  # bytes: file systems limit names to 255 of them
        digest = hashlib.sha1(name.encode()).hexdigest()[:8]
        name = name.encode()[: MAX_NAME - 9].decode(errors="ignore") + f"~{digest}"
    return name


def register_resolver() -> None:
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, job_dir_name)


def naming_overrides(argv: list[str]) -> list[str]:
    """The Hydra override that leaves the fixed keys out of a multirun's job names (none for a
    single run, or when the user sets the exclusion list themselves)."""
    args, _ = get_args_parser().parse_known_args(argv)
    if not args.multirun:
        return []
    try:
        overrides = OverridesParser.create().parse_overrides(args.overrides)
    except OverrideParseException:
        return []  # the preflight has reported it already
    if any(o.key_or_group == EXCLUDE_KEY for o in overrides):
        return []
    swept = {o.key_or_group for o in overrides if o.is_sweep_override()}
    fixed = [
        o.key_or_group
        for o in overrides
        if o.key_or_group not in swept and not o.key_or_group.startswith("hydra")
    ]
    return [f"{EXCLUDE_KEY}=[{','.join(fixed)}]"] if fixed else []


register_resolver()
