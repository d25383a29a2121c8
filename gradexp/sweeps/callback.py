"""The Hydra callback that tells the CLI where a multirun writes."""

from pathlib import Path
from typing import Any, ClassVar

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class SweepCallback(Callback):
    """Runs in the process that launches the jobs. It records the sweep directory at the start,
    because Hydra calls `on_multirun_end` only when every job returned: the CLI writes the sweep
    table itself, after the sweep ended for whatever reason."""

    sweep_dir: ClassVar[Path | None] = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        SweepCallback.sweep_dir = Path(config.hydra.sweep.dir)
