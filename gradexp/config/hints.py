"""Hints that turn "no such key" into the key the user meant: the closest spelling, or the model
a key belongs to (`model.cell` is an RNN's key, not an MLP's)."""

import dataclasses
import difflib

from gradexp.models import MODELS


def unknown_key_problem(key: str, known: list[str]) -> str:
    """'no such key', with what the user probably meant; `known` are the keys that do exist
    beside it (full dotted names or last parts)."""
    parent, _, name = key.rpartition(".")
    names = [k.rpartition(".")[2] for k in known]
    if parent == "model" and "_target_" in names:  # model=custom: its keys are the target's arguments
        return (
            f"not in configs/model/custom.yaml: a keyword argument of the target is added with + (+{key}=...)"
        )
    owners = _models_with(name) if parent == "model" else []
    if owners:
        return f"no such key for this model (it belongs to {', '.join(f'model={m}' for m in owners)})"
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.75)
    if close:
        return f"no such key (did you mean {f'{parent}.' if parent else ''}{close[0]}?)"
    return "no such key"


def _models_with(field: str) -> list[str]:
    return [
        name
        for name, spec in MODELS.items()
        if spec.config is not None and field in {f.name for f in dataclasses.fields(spec.config)}
    ]
