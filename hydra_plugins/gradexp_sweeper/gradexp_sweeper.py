"""Hydra's basic sweeper (the cartesian product of the swept values), with each job's config
composed once, and mostly not from scratch.

Hydra's basic sweeper composes every job of a batch before launching it, to check them, and
the launcher then composes each job again, in the job's own process: twice about 0.1 s a job.
gradexp's CLI has already checked the grid before Hydra ran (`gradexp.config.preflight`: every
override parsed, every value composed and validated in a job, and a key that only some
combinations have passed as `++key`: see `gradexp.config.grid`), so the check is skipped; and
the launcher is handed a loader that makes a job's config from an earlier job's where only
plain values differ (`gradexp.config.compose`), the same config Hydra would compose.
"""

from collections.abc import Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from gradexp.config.compose import ComposeOnce


class GradexpSweeper(BasicSweeper):
    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        loader = ComposeOnce(hydra_context.config_loader)
        context = HydraContext(config_loader=loader, callbacks=hydra_context.callbacks)
        super().setup(hydra_context=context, task_function=task_function, config=config)

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        """Checked already, by gradexp's preflight (see the module's docstring)."""
