"""Config: where the YAML lives, its typed schema, and its validation."""

from pathlib import Path

from gradexp.config.errors import ConfigError
from gradexp.config.schema import RunConfig
from gradexp.config.validate import validate


def _config_dir() -> Path:
    """configs/ ships inside the installed package; in a source checkout it sits beside it."""
    packaged = Path(__file__).resolve().parent.parent / "configs"
    return packaged if packaged.is_dir() else packaged.parent.parent / "configs"


CONFIG_DIR = _config_dir()

__all__ = ["CONFIG_DIR", "ConfigError", "RunConfig", "validate"]
