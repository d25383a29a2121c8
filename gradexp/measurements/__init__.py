"""Gradexp's measurements: each module here is one measurement, registered at import with
`@measurement`. Adding one is adding a module; the charts, summary keys and columns follow."""

import importlib
import pkgutil

from gradexp.measurements.base import MEASUREMENTS, Context, Measurement, Output, Signal, measurement

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["MEASUREMENTS", "Context", "Measurement", "Output", "Signal", "measurement"]
