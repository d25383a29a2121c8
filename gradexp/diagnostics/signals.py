"""Per-layer signals of an MLP, measured through hooks that exist only during a diagnostic step:

- grad_signal/<layer>: ||dL/dz|| for z = W h + b, the back-propagated signal whose variance
  Glorot & Bengio (2010) follow across layers. The weight gradient is dL/dW = dL/dz h^T, so the
  two can differ: the weight gradient can stay flat while this signal shrinks.
- act_mean/<layer>, act_std/<layer>: the activation's output (the forward half of the argument).
- saturation/<layer>: share of (example, unit) pairs where phi' < fraction * max phi' (sigmoid,
  tanh, softsign); dead/<layer>: share of units whose input is <= 0 for the whole batch (ReLU
  family), which then pass no gradient (or only the leak).

Everything stays a device tensor; the recorder copies it to the host at its next flush.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

import torch
from torch import Tensor, nn

from gradexp.diagnostics.theory import derivative, max_derivative


class MLPSignals:
    def __init__(
        self,
        hidden: list[tuple[str, nn.Module]],
        output: tuple[str, nn.Module],
        family: str | None,
        saturation_fraction: float,
    ):
        self.hidden, self.output, self.family = hidden, output, family
        activation = hidden[0][1].activation if hidden else None
        self.threshold = saturation_fraction * max_derivative(activation) if family == "saturating" else None
        self.values: dict[str, Tensor] = {}
        self.activations: dict[str, Tensor] = {}

    @contextmanager
    def capture(self) -> Iterator[None]:
        """Install the hooks for one forward and backward pass; remove them afterwards."""
        self.values, self.activations = {}, {}
        handles = []
        for name, layer in self.hidden:
            handles.append(layer.linear.register_forward_hook(partial(self._on_linear, name)))
            handles.append(layer.activation.register_forward_hook(partial(self._on_activation, name)))
        handles.append(self.output[1].register_forward_hook(partial(self._on_linear, self.output[0])))
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def _on_linear(self, name: str, module: nn.Module, inputs, z: Tensor) -> None:
        if z.requires_grad:
            z.register_hook(partial(self._on_signal, name))

    def _on_signal(self, name: str, grad: Tensor) -> None:
        self.values[f"grad_signal/{name}"] = torch.linalg.vector_norm(grad)

    def _on_activation(self, name: str, module: nn.Module, inputs, output: Tensor) -> None:
        u, a = inputs[0].detach(), output.detach()
        self.activations[name] = a
        self.values[f"act_mean/{name}"] = a.mean()
        self.values[f"act_std/{name}"] = a.std()
        if self.family == "saturating":
            self.values[f"saturation/{name}"] = (derivative(module, u) < self.threshold).float().mean()
        elif self.family == "rectifier":
            self.values[f"dead/{name}"] = (u <= 0).all(dim=0).float().mean()
