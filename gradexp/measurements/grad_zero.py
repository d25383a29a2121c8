"""grad_zero/<layer>: the share of the weight gradient's entries that are exactly zero.

In float32 an entry is exactly zero only where no example reached it (a dead ReLU unit, an input
that is always 0). In float16 any product below 2^-24 (about 6e-8) rounds to zero as well: the
backward pass loses the small gradients outright, vanishing by number format rather than by
depth. Micikevicius et al. (2018) found most of a network's activation gradients in that range,
which is why float16 training scales the loss; with the scale, the share falls back to float32's.
Measured on the gradient as the optimizer receives it (unscaled, after clipping): `_foreach_norm`
of order 0 counts the non-zero entries (in float32: a float16 count would stop at 65504). A layer
the loss did not reach (no .grad) reads 1.0: its whole gradient is zero.

It applies where float16 computes the gradient (trainer.precision=fp16, or float16 weights).
Elsewhere an exact zero means a dead unit, which `dead/<site>` already shows, and the count would
cost as much as the weight-gradient norms themselves (a pass over every gradient at a diagnostic
step) to say nothing new. bfloat16 has float32's exponent range: it underflows where float32 does."""

import torch

from gradexp.measurements.base import Context, Measurement, Output, Signal, measurement


@measurement
class GradZero(Measurement):
    signals = (
        Signal("grad_zero", "exactly-zero weight-gradient entries per layer (share)", of_gradient=True),
    )
    order = 45

    @staticmethod
    def applies(context: Context) -> str | None:
        if context.precision == "fp16" or any(
            layer.weight.dtype == torch.float16 for layer in context.network.layers
        ):
            return None
        return (
            "only float16 loses gradients to underflow (trainer.precision=fp16); "
            "a float32 zero is a dead unit: see dead/<site>"
        )

    def __init__(self, context: Context):
        super().__init__(context)
        layers = context.network.layers
        self.weights = [layer.weight for layer in layers]
        self.tags = [f"grad_zero/{layer.name}" for layer in layers]
        self._sizes = None

    @torch.no_grad()
    def measure(self, capture, batch, loss_fn) -> Output:
        grads = [w.grad if w.grad is not None else torch.zeros_like(w) for w in self.weights]
        if self._sizes is None:  # made once: from a Python list at every step, a copy to the device
            self._sizes = torch.tensor([w.numel() for w in self.weights], dtype=torch.float64)
            self._sizes = self._sizes.to(self.weights[0].device)
        nonzero = torch.stack(torch._foreach_norm(grads, 0, dtype=torch.float32)).double()
        return Output(scalars=[(self.tags, 1.0 - nonzero / self._sizes)])
