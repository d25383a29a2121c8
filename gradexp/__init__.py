"""gradexp: train a network and record how its gradients behave, layer by layer."""

__version__ = "0.1.0"


def __getattr__(name: str):
    """`gradexp.watch` and `gradexp.Monitor`, imported on first use: the CLI never needs them."""
    if name in ("watch", "Monitor", "Diverged"):
        from gradexp import watching

        globals()[name] = value = getattr(watching, name)
        return value
    raise AttributeError(f"module 'gradexp' has no attribute {name!r}")
