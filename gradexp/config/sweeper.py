"""Which Hydra sweeper a sweep runs with: gradexp's own (hydra_plugins/gradexp_sweeper, Hydra's
basic grid sweeper composing each job once) wherever Hydra's basic one would run.

It is chosen on the command line rather than in config.yaml's defaults, where it would override
a preset's own choice of sweeper (an Optuna search)."""

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from omegaconf import DictConfig

from hydra_plugins.gradexp_sweeper.gradexp_sweeper import GradexpSweeper

CHOICE = "hydra/sweeper=gradexp"  # what the CLI adds to a sweep's command line
_BASIC = f"{BasicSweeper.__module__}.{BasicSweeper.__name__}"
GRID_SWEEPERS = {_BASIC, f"{GradexpSweeper.__module__}.{GradexpSweeper.__name__}"}  # as `_target_` names them


def grid_sweeper(composed: DictConfig, hydra_lines: list[str], multirun: bool) -> list[str]:
    """The override that picks gradexp's sweeper: for a sweep that would run Hydra's basic one
    and whose command line picks no sweeper itself."""
    typed = any(line.lstrip("+").startswith("hydra/sweeper=") for line in hydra_lines)
    if not multirun or typed or composed.hydra.sweeper._target_ != _BASIC:
        return []
    return [CHOICE]
