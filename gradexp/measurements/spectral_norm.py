"""spectral_norm/<W_hh>: the largest singular value of each recurrent matrix (for LSTM and GRU, the
largest over their gate blocks, each an H x H recurrence). Above 1, the gradient through time can
explode; well below, it vanishes (Pascanu et al. 2013). By power iteration warm-started from the
last diagnostic step: unlike an SVD it never waits for the GPU and never raises on a diverged
matrix. It iterates on the matrix divided by a power of two near its largest entry, so that a
singular value of 1e20 does not overflow float32 on the way (the quotient is exact)."""

import torch
from torch import Tensor

from gradexp.measurements.base import Context, Measurement, Output, Signal, measurement
from gradexp.scaled_norms import power_of_two_below

POWER_ITERATIONS = 30  # per diagnostic step; warm starts make the estimate converge over training


@measurement
class SpectralNorm(Measurement):
    signals = (Signal("spectral_norm", "largest singular value of W_hh", per="recurrent"),)
    order = 70

    @staticmethod
    def applies(context: Context) -> str | None:
        if not any(layer.recurrent for layer in context.network.layers):
            return "the network has no recurrent matrix W_hh"
        return None

    def __init__(self, context: Context):
        super().__init__(context)
        self.recurrent = [(layer.name, layer.weight) for layer in context.network.layers if layer.recurrent]
        self._vectors: dict[str, Tensor] = {}

    @torch.no_grad()
    def measure(self, capture, batch, loss_fn) -> Output:
        sigmas = []
        for name, w in self.recurrent:
            largest = torch.linalg.vector_norm(w, float("inf"), dtype=torch.float32)
            scale = power_of_two_below(largest)
            blocks = w.view(-1, w.shape[1], w.shape[1]) * scale  # gate x H x H, dtype kept
            v = self._vectors.get(name)
            if v is None:
                v = torch.ones(blocks.shape[0], w.shape[1], 1, device=w.device, dtype=w.dtype)
            for _ in range(POWER_ITERATIONS):
                v = blocks.transpose(1, 2) @ (blocks @ v)
                v = v / torch.linalg.vector_norm(v, dim=1, keepdim=True).clamp_min(1e-30)
            self._vectors[name] = v
            sigmas.append(torch.linalg.vector_norm(blocks @ v, dim=1).amax().double() / scale.double())
        return Output(scalars=[([f"spectral_norm/{n}" for n, _ in self.recurrent], torch.stack(sigmas))])

    def state_dict(self) -> dict:
        """The power iteration's warm starts."""
        return {"singular_vectors": {n: v.cpu() for n, v in self._vectors.items()}}

    def load_state_dict(self, state: dict) -> None:
        device = self.recurrent[0][1].device
        self._vectors = {n: v.to(device) for n, v in state.get("singular_vectors", {}).items()}
