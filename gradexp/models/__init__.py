"""The networks gradexp builds: one module per kind (mlp, rnn, cnn, transformer, custom), each registering its
spec; `build_model` builds and initializes the configured one for a task."""

import importlib
import pkgutil

from torch import nn

from gradexp.initializers import initialize
from gradexp.models.spec import MODELS, ModelSpec, Size, default_biases

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

from gradexp.models.mlp import MLP  # noqa: E402  (re-exported: scripts and tests use them)
from gradexp.models.rnn import RNN, RNN_CELLS  # noqa: E402


def build_model(cfg, task) -> nn.Module:
    """Build the configured network for the task's shapes and initialize it: the init group sets
    every weight matrix (as the spec splits them) and every bias outside a norm layer."""
    spec = MODELS[cfg.model.name]
    model = spec.build(cfg, task)
    if spec.init_blocks is not None:
        weights = spec.init_blocks(model)
    else:
        weights = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    initialize(weights, default_biases(model), cfg.init)
    spec.after_init(model, cfg)
    return model


def describe(c, device: object, params: int | None) -> str:
    """One line that says what is being trained: for the top of the terminal output, and for
    runs compared side by side. `c` is the run's config (typed, or as summary.json keeps it)."""
    model = MODELS[c.model.name].describe(c.model, c.activation, c.norm)
    size = f" | {params:,} params" if params is not None else ""
    precision = str(getattr(c.trainer, "precision", "32"))  # absent from older summaries
    autocast = "" if precision == "32" else f" in {precision}"
    return (
        f"{model} init={c.init.name} | {c.optimizer.name} lr={c.optimizer.lr} "
        f"| task={c.task.name} | {c.trainer.steps} steps on {device}{autocast}{size}"
    )


__all__ = ["MLP", "MODELS", "RNN", "RNN_CELLS", "ModelSpec", "Size", "build_model", "describe"]
