"""grad_through_time/<rnn layer> (a vector: ||dL/dh_t|| for every time step t) and its ratio
grad_through_time_ratio/<rnn layer> = ||dL/dh_1|| / ||dL/dh_T||, by replaying gradexp's RNN cell
by cell (`diagnostics/through_time.py`): PyTorch's fused kernels never expose h_t."""

import torch

from gradexp.diagnostics.through_time import ThroughTime as Replay
from gradexp.measurements.base import Context, Measurement, Output, Signal, measurement


@measurement
class ThroughTime(Measurement):
    signals = (
        Signal("grad_through_time", "", per="sequence", summary=False, per_step=True),
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
        if context.model_name != "rnn":
            return "it replays gradexp's RNN (model=rnn) time step by time step"
        return None

    def __init__(self, context: Context):
        super().__init__(context)
        self.replay = Replay(context.network.model)

    def measure(self, capture, batch, loss_fn) -> Output:
        with torch.enable_grad():
            norms, hidden = self.replay.measure(*batch, loss_fn)
        curves = torch.stack(list(norms.values()))  # recurrent layer x time step
        return Output(
            scalars=[([f"grad_through_time_ratio/{n}" for n in norms], curves[:, 0] / curves[:, -1])],
            vectors=[([f"grad_through_time/{n}" for n in norms], curves)],
            activations=hidden,
        )
