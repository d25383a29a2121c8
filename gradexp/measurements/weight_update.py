"""weight_norm/<layer> = ||W||, and update_ratio/<layer> = ||W_after - W_before|| / ||W_before||:
how far one optimizer step moves each weight, relative to its size (about 1e-3 is the usual
healthy figure; far above, the step overshoots; far below, the layer barely learns).

Both take a pass over every weight twice: a copy before the update and its norm, then the
difference after it and its norm. On the CPU each weight is copied and its copy's squares summed
before the next weight is read, and likewise for the difference, so that the second pass reads
what the first left in cache (a weight matrix is a fraction of the core's cache; all of them are
not): on a depth-20 MLP of width 256 that saves about 5% of a bare step (measured alternated
with the fused passes). On a GPU, the copies and differences are fused over all weights."""

import torch

from gradexp.measurements.base import Context, Measurement, Output, Signal, measurement
from gradexp.scaled_norms import checked, norms, sum_of_squares


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
        self._one_by_one = all(w.device.type == "cpu" and w.dtype == torch.float32 for w in self.weights)
        self._before: list | None = None  # the weights before the update, reused every time
        self._norms = None

    @torch.no_grad()
    def measure(self, capture, batch, loss_fn) -> Output:
        if self._before is None:
            self._before = [torch.empty_like(w) for w in self.weights]
        if self._one_by_one:
            sums = [sum_of_squares(copy.copy_(w)) for copy, w in zip(self._before, self.weights)]
            self._norms = checked(torch.stack(sums).sqrt(), self._before)
        else:
            torch._foreach_copy_(self._before, self.weights)
            self._norms = norms(self._before)
        return Output(scalars=[([f"weight_norm/{n}" for n in self.names], self._norms)])

    @torch.no_grad()
    def after_update(self) -> Output:
        if self._one_by_one:  # last to first: the optimizer wrote the last weights last
            pairs = list(zip(self._before, self.weights))[::-1]
            sums = [sum_of_squares(copy.sub_(w)) for copy, w in pairs][::-1]  # before - after = -update
            update = checked(torch.stack(sums).sqrt(), self._before)
        else:
            torch._foreach_sub_(self._before, self.weights)
            update = norms(self._before)
        ratio = update.double() / self._norms.double().clamp_min(1e-300)
        return Output(scalars=[([f"update_ratio/{n}" for n in self.names], ratio)])
