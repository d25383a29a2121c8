"""weight_norm/<layer> = ||W||, and update_ratio/<layer> = ||W_after - W_before|| / ||W_before||:
how far one optimizer step moves each weight, relative to its size (about 1e-3 is the usual
healthy figure; far above, the step overshoots; far below, the layer barely learns)."""

import torch

from gradexp.measurements.base import Context, Measurement, Output, Signal, measurement
from gradexp.scaled_norms import norms


@measurement
class WeightUpdate(Measurement):
    signals = (
        Signal("weight_norm", "weight norm per layer"),
        Signal(
            "update_ratio",
            "update ratio ||dW|| / ||W|| per layer",
            columns=("last",),
            heading="update ratio {step}",
        ),
    )
    order = 40

    def __init__(self, context: Context):
        super().__init__(context)
        self.names = context.network.layer_names
        self.weights = [layer.weight for layer in context.network.layers]
        self._before: list | None = None  # the weights before the update, reused every time
        self._norms = None

    @torch.no_grad()
    def measure(self, capture, batch, loss_fn) -> Output:
        if self._before is None:
            self._before = [torch.empty_like(w) for w in self.weights]
        torch._foreach_copy_(self._before, self.weights)
        self._norms = norms(self._before)  # the copy, still in cache: the same values, read faster
        return Output(scalars=[([f"weight_norm/{n}" for n in self.names], self._norms)])

    @torch.no_grad()
    def after_update(self) -> Output:
        torch._foreach_sub_(self._before, self.weights)  # in place: before - after = -update
        ratio = norms(self._before).double() / self._norms.double().clamp_min(1e-300)
        return Output(scalars=[([f"update_ratio/{n}" for n in self.names], ratio)])
