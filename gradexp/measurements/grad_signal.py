"""grad_signal/<layer>: ||dL/dy|| for the layer's output y = W h (+ b), the back-propagated signal
whose variance Glorot & Bengio (2010) follow across layers. The weight gradient is
dL/dW = dL/dy h^T, so the two can differ: the weight gradient can stay flat while this signal
shrinks. For an MLP, y is the pre-activation z. A layer whose module runs twice, or whose weight
two modules share (tied embeddings), has several outputs: its y is all of them, and the norm is
taken over all of them. A recurrent matrix has no output of its own (see grad_through_time).

With gradient accumulation the hooks watch the first micro-batch, and the signal is the gradient
of that micro-batch's mean loss."""

import torch

from gradexp.measurements.base import Context, Measurement, Output, Signal, measurement


@measurement
class GradSignal(Measurement):
    signals = (
        Signal(
            "grad_signal",
            "back-propagated signal ||dL/dy|| per layer",
            columns=("first",),
            heading="signal ||dL/dz|| {step}",
            of_gradient=True,
        ),
    )
    needs = frozenset({"layers"})
    order = 10

    @staticmethod
    def applies(context: Context) -> str | None:
        if not any(layer.modules for layer in context.network.layers):
            return "no layer has an output of its own"
        return None

    def __init__(self, context: Context):
        super().__init__(context)
        layers = context.network.layers
        self.index = [i for i, layer in enumerate(layers) if layer.modules]
        self.tags = [f"grad_signal/{layers[i].name}" for i in self.index]
        self._owners = None

    def measure(self, capture, batch, loss_fn) -> Output:
        grads = [capture.layer_grad_norms[i] for i in self.index]
        flat = [g for gs in grads for g in gs]
        if not flat:
            return Output()
        norms = torch.stack(flat).double()
        counts = tuple(len(gs) for gs in grads)
        if any(count != 1 for count in counts):  # several outputs, or none: a norm over all of them
            owners, missing = self._layout(counts, norms.device)
            norms = norms.new_zeros(len(grads)).index_add_(0, owners, norms.square()).sqrt()
            norms = torch.where(missing, torch.nan, norms)
        return Output(scalars=[(self.tags, norms * self.context.grad_scale)])

    def _layout(self, counts: tuple[int, ...], device) -> tuple:
        """Which layer each output belongs to and which layers had none, on the device, made once
        per pattern of outputs (from a Python list at every step, it would be a host sync)."""
        if self._owners is None or self._owners[0] != (counts, str(device)):
            owners = [k for k, count in enumerate(counts) for _ in range(count)]
            self._owners = (
                (counts, str(device)),
                torch.tensor(owners, device=device),
                torch.tensor([count == 0 for count in counts], device=device),
            )
        return self._owners[1], self._owners[2]
