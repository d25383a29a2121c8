"""gradexp: train a network and record how its gradients behave, layer by layer."""

__version__ = "0.1.0"
