"""`sweep.seeds=N`: every configuration of a sweep over N seeds, trainer.seed to
trainer.seed + N - 1, as if `trainer.seed=s,s+1,...` had been typed (the sweep table then groups
the jobs by configuration, with the spread over the seeds: see sweeps/groups.py)."""

from hydra.core.override_parser.types import Override
from omegaconf import DictConfig

from gradexp.config.errors import ConfigError
from gradexp.config.sweeper import GRID_SWEEPERS
from gradexp.config.validate import MAX_SEED

KEY = "sweep.seeds"
SEED = "trainer.seed"


def seed_sweep(composed: DictConfig, overrides: list[Override], multirun: bool) -> list[str]:
    """The override that sweeps the seeds (none for one seed, or when the command line sweeps
    exactly them already: a resumed sweep repeats its own). `composed` is the command's config
    with Hydra's (its sweeper), `overrides` what it types and its preset sweeps."""
    n = composed.sweep.seeds
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(KEY, n, "out of range", "an integer >= 1")
    if n == 1:
        return []
    if not multirun:
        raise ConfigError(KEY, n, "runs each configuration of a sweep over several seeds", "add -m, or 1")
    if composed.hydra.sweeper._target_ not in GRID_SWEEPERS:
        raise ConfigError(KEY, n, "a searching sweeper (hparams_search) picks its own trials", "1")
    typed = next((o for o in overrides if o.key_or_group == SEED), None)
    if typed is not None and typed.is_sweep_override():
        seeds = [int(v) for v in typed.sweep_string_iterator()]
        base = min(seeds)
        if sorted(seeds) == list(range(base, base + n)):
            return []
        raise ConfigError(
            KEY,
            n,
            f"{SEED} is swept too ({typed.input_line.partition('=')[2]})",
            f"one of the two: {KEY}=N from one {SEED}, or {SEED}=a,b,c alone",
        )
    base = int(typed.value()) if typed is not None else int(composed.trainer.seed)
    if base + n - 1 > MAX_SEED:
        raise ConfigError(
            KEY, n, f"seeds from {base} would pass {MAX_SEED}", f"an integer <= {MAX_SEED - base + 1}"
        )
    return [f"{SEED}={','.join(str(s) for s in range(base, base + n))}"]
