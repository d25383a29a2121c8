"""Config: where the YAML lives (here), its typed schema (schema.py), its validation
(validate.py) and the one-line errors for a user's mistakes (errors.py, preflight.py).

This module imports nothing else of gradexp, so the registries can import the schema without a
cycle through the validator that imports them."""

from pathlib import Path


def _config_dir() -> Path:
    """configs/ ships inside the installed package; in a source checkout it sits beside it."""
    packaged = Path(__file__).resolve().parent.parent / "configs"
    return packaged if packaged.is_dir() else packaged.parent.parent / "configs"


CONFIG_DIR = _config_dir()
