"""summary.json: one run's outcome in a file that sweeps and scripts read without TensorBoard."""

import json
import math
from pathlib import Path
from typing import Any

from gradexp.atomic import write_text_atomic


def finite_or_none(value: Any) -> Any:
    """JSON has no NaN or infinity: non-finite numbers (a diverged run's) are written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite_or_none(v) for v in value]
    return value


def write_json_atomic(path: Path, data: dict) -> None:
    write_text_atomic(path, json.dumps(finite_or_none(data), indent=2, allow_nan=False) + "\n")
