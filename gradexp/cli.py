"""The `gradexp` command: a thin wrapper that turns a Hydra config into a call to `train`."""

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from gradexp.config import CONFIG_DIR
from gradexp.config.errors import ConfigError
from gradexp.config.preflight import check_command_line
from gradexp.engine import train

EXIT_CONFIG_ERROR = 2
EXIT_INTERRUPTED = 130  # the shell's convention for a process ended by SIGINT


def main() -> None:
    """Entry point of `gradexp` and `python -m gradexp`."""
    try:
        check_command_line(sys.argv[1:])
    except ConfigError as error:
        _fail(error)
    _hydra_main()


@hydra.main(config_path=str(CONFIG_DIR), config_name="config", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        train(cfg, run_dir)
    except ConfigError as error:
        _fail(error)
    except KeyboardInterrupt:
        # train() has already flushed the events and written summary.json (status: interrupted)
        print(f"gradexp: interrupted; what was recorded is in {run_dir}", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)


def _fail(error: ConfigError) -> None:
    print(f"gradexp: error: {error}", file=sys.stderr)
    sys.exit(EXIT_CONFIG_ERROR)
