"""grad_through_time/<rnn layer> (a vector: ||dL/dh_t|| for every time step t) and its ratio
grad_through_time_ratio/<rnn layer> = ||dL/dh_1|| / ||dL/dh_T||, for a network that can replay
itself time step by time step (`gradexp_through_time`: gradexp's RNN, `diagnostics/through_time.py`):
PyTorch's fused kernels never expose h_t."""

import torch

from gradexp.measurements.base import Context, Measurement, Output, Signal, measurement


@measurement
class ThroughTime(Measurement):
    signals = (
        Signal("grad_through_time", "", per="sequence", summary=False),
        Signal(
            "grad_through_time_ratio",
            "gradient through time ||dL/dh_1|| / ||dL/dh_T||",
            per="sequence",
        ),
    )
    due_with_histograms = True  # its hidden states are the RNN's activation histograms
    order = 60

    @staticmethod
    def applies(context: Context) -> str | None:
        if not context.batch:
            return "it replays the network on the step's batch, which a watched loop does not hand over"
        if not callable(getattr(context.network.model, "gradexp_through_time", None)):
            return (
                "it replays a recurrent network time step by time step, which gradexp's RNN (model=rnn) can"
            )
        return None

    def measure(self, capture, batch, loss_fn) -> Output:
        with torch.enable_grad():
            norms, hidden = self.context.network.model.gradexp_through_time(*batch, loss_fn)
        curves = torch.stack(list(norms.values()))  # recurrent layer x time step
        return Output(
            scalars=[([f"grad_through_time_ratio/{n}" for n in norms], curves[:, 0] / curves[:, -1])],
            vectors=[([f"grad_through_time/{n}" for n in norms], curves)],
            activations=hidden,
        )
