"""Per-layer signals of an MLP, measured through hooks that exist only during a diagnostic step:

- grad_signal/<layer>: ||dL/dz|| for z = W h + b, the back-propagated signal whose variance
  Glorot & Bengio (2010) follow across layers. The weight gradient is dL/dW = dL/dz h^T, so the
  two can differ: the weight gradient can stay flat while this signal shrinks.
- act_mean/<layer>, act_std/<layer>: the activation's output (the forward half of the argument).
- saturation/<layer>: share of (example, unit) pairs where phi' < fraction * max phi' (sigmoid,
  tanh, softsign); dead/<layer>: share of units whose input is <= 0 for the whole batch (ReLU
  family), which then pass no gradient (or only the leak).

With gradient accumulation the hooks watch the first micro-batch, and grad_signal is the gradient
of that micro-batch's mean loss. Everything stays a device tensor; the recorder copies it to the
host at its next flush.
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
        self.grad_scale = 1.0  # the engine backpropagates loss / grad_accum; this undoes the division
        self.activation = hidden[0][1].activation
        self.threshold = (
            saturation_fraction * max_derivative(self.activation) if family == "saturating" else None
        )
        self.names = [name for name, _ in hidden]
        # a ReLU, or a leaky ReLU with a slope >= 0: its output is <= 0 exactly where its input is
        self.negative_inputs_give_non_positive_outputs = bool(self.activation(torch.tensor([-1.0])) <= 0)
        unit_signal = {"saturating": "saturation", "rectifier": "dead"}.get(family)
        self.tags = [f"grad_signal/{n}" for n in [*self.names, output[0]]]
        for prefix in ("act_mean", "act_std", *([unit_signal] if unit_signal else [])):
            self.tags += [f"{prefix}/{n}" for n in self.names]
        self._grads: dict[str, Tensor] = {}
        self._inputs: dict[str, Tensor] = {}
        self.activations: dict[str, Tensor] = {}
        self._buffers: dict[str, Tensor] = {}

    def _stacked(self, name: str, tensors: list[Tensor]) -> Tensor:
        """torch.stack into a buffer kept from step to step: allocating megabytes afresh at every
        diagnostic step costs more than the copy itself (page faults)."""
        shape = (len(tensors), *tensors[0].shape)
        buffer = self._buffers.get(name)
        if buffer is None or buffer.shape != shape or buffer.device != tensors[0].device:
            buffer = self._buffers[name] = tensors[0].new_empty(shape)
        return torch.stack(tensors, out=buffer)

    @contextmanager
    def capture(self) -> Iterator[None]:
        """Install the hooks for one forward and backward pass; remove them afterwards. The hooks
        only keep references: `values` computes every statistic in a few batched operations."""
        self._grads, self._inputs, self.activations = {}, {}, {}
        handles = []
        for name, layer in self.hidden:
            reads_z = isinstance(layer.norm, nn.Identity)  # the activation's input is z itself
            if not reads_z:
                handles.append(layer.linear.register_forward_hook(partial(self._on_linear, name)))
            hook = partial(self._on_activation, name, reads_z)
            handles.append(layer.activation.register_forward_hook(hook))
        handles.append(self.output[1].register_forward_hook(partial(self._on_linear, self.output[0])))
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def _on_linear(self, name: str, module: nn.Module, inputs, z: Tensor) -> None:
        if z.requires_grad:
            z.register_hook(partial(self._grads.__setitem__, name))

    def _on_activation(self, name: str, reads_z: bool, module: nn.Module, inputs, output: Tensor) -> None:
        """One hook per layer where there is no norm: half the hooks, each a cost per module."""
        if reads_z:
            self._on_linear(name, module, inputs, inputs[0])
        self._inputs[name] = inputs[0].detach()
        self.activations[name] = output.detach()

    def values(self) -> tuple[list[str], Tensor]:
        """The captured step's signals: their tags (the same every step) and one device vector."""
        names = [*self.names, self.output[0]]
        parts = [torch.stack(torch._foreach_norm([self._grads[n] for n in names])) * self.grad_scale]
        outputs = self._stacked("outputs", [self.activations[n] for n in self.names])  # layer x batch x units
        unit_signal = None
        if self.family == "saturating":
            inputs = self._stacked("inputs", [self._inputs[n] for n in self.names])
            unit_signal = (derivative(self.activation, inputs) < self.threshold).float().mean(dim=(1, 2))
        elif self.family == "rectifier":  # dead: input <= 0 for every example of the batch
            signs = (  # the outputs, as stacked, tell that where their signs are the inputs'
                outputs
                if self.negative_inputs_give_non_positive_outputs
                else self._stacked("inputs", [self._inputs[n] for n in self.names])
            )
            unit_signal = (signs.amax(dim=1) <= 0).float().mean(dim=1)
        flat = outputs.flatten(1)  # layer x (batch * units)
        mean = flat.mean(dim=1)
        # centred in place (the buffer is ours), then a norm: a fraction of the cost of
        # Tensor.std along a row on the CPU, and as exact
        std = torch.linalg.vector_norm(flat.sub_(mean[:, None]), dim=1) / max(flat.shape[1] - 1, 1) ** 0.5
        parts += [mean, std, *([unit_signal] if unit_signal is not None else [])]
        return self.tags, torch.cat(parts)
