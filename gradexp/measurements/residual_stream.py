"""Along the residual stream of a network with repeated blocks (ResNet, Transformer): at each
block's output, resid_std/<block> (the forward std, which grows with depth in a Post-LN-free
stack) and resid_grad/<block> = ||dL/d(block output)||, the gradient that reaches the boundary
(He et al. 2016: the identity path keeps it from vanishing; Xiong et al. 2020: its size at the
last blocks is what makes Post-LN Transformers need warmup)."""

import torch

from gradexp.measurements.base import Context, Measurement, Output, Signal, measurement
from gradexp.measurements.reduce import Indices, Rows, Stacker, groups, scatter


@measurement
class ResidualStream(Measurement):
    signals = (
        Signal("resid_std", "forward std at each block boundary", per="block"),
        Signal("resid_grad", "gradient norm at each block boundary", per="block", of_gradient=True),
    )
    needs = frozenset({"blocks"})
    order = 30

    @staticmethod
    def applies(context: Context) -> str | None:
        return None if context.network.blocks else "the network has no repeated blocks"

    def __init__(self, context: Context):
        super().__init__(context)
        names = [b.name for b in context.network.blocks]
        self.tags = [f"resid_std/{n}" for n in names] + [f"resid_grad/{n}" for n in names]
        self._stacker, self._indices = Stacker(), Indices()

    def measure(self, capture, batch, loss_fn) -> Output:
        outputs, grads = capture.block_outputs, capture.block_grad_norms
        like = next((t for t in outputs if t is not None), None)
        if like is None:
            return Output()
        n = len(outputs)
        stds = []
        for (shape, *_), index in groups(outputs).items():
            _, std = Rows([outputs[i] for i in index], self._stacker, f"{shape}").mean_std()
            stds.append((index, std))
        present = [i for i, g in enumerate(grads) if g is not None]
        norms = []
        if present:
            values = torch.stack([grads[i] for i in present]).double() * self.context.grad_scale
            norms.append((present, values))
        values = [scatter(n, like, stds, self._indices), scatter(n, like, norms, self._indices)]
        return Output(scalars=[(self.tags, torch.cat(values))])
