"""A user's callable named by a dotted path in the config (`model._target_`, `task._target_`),
imported with every failure as one line that names the key."""

import importlib
import os
import sys

from gradexp.config.errors import ConfigError, first_line


def import_callable(target: str, key: str, example: str):
    """The callable at `target`: in an installed module, or in one beside where gradexp runs (as
    `python -m` would find it; a console script's sys.path has no working directory)."""
    here = os.getcwd()
    if here not in sys.path:
        sys.path.append(here)  # last: a file here never shadows an installed module
    try:
        found = _locate(target)
    except Exception as error:  # noqa: BLE001 (any import failure is the user's path or module)
        raise ConfigError(
            key, target, f"cannot be imported: {first_line(error, typed=True)}", example
        ) from None
    if not callable(found):
        raise ConfigError(key, target, "is not callable", example)
    return found


def _locate(path: str):
    """The object at a dotted path: the longest prefix that is a module, then its attributes.
    (Hydra's own locate logs its failures; here they are one line.) An error inside the module,
    such as a missing dependency or a syntax error, is raised as it is."""
    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        name = ".".join(parts[:cut])
        try:
            found = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name is not None and (name == error.name or name.startswith(error.name + ".")):
                continue  # this prefix is no module: try a shorter one
            raise
        for attribute in parts[cut:]:
            found = getattr(found, attribute)
        return found
    return importlib.import_module(path)
