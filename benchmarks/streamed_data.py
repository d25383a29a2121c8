"""Data that streams (task=custom with trainer.workers): Gaussian blobs made from each example's
index as it is read, so nothing is held in memory. For cuda_check.py's streamed variant:

    gradexp task=custom task._target_=benchmarks.streamed_data.blobs trainer.workers=2
"""

import torch
from torch.utils.data import Dataset

D_IN, CLASSES = 32, 4


class Blobs(Dataset):
    """Example i of class i % 4: its class's centre plus unit Gaussian noise, drawn from a
    generator seeded with the example's index (and the split's offset)."""

    classes = list(range(CLASSES))

    def __init__(self, n: int, offset: int, seed: int):
        self.n, self.offset = n, offset
        self.centres = torch.randn(CLASSES, D_IN, generator=torch.Generator().manual_seed(seed)) * 0.6

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if not 0 <= i < self.n:
            raise IndexError(i)
        g = torch.Generator().manual_seed(self.offset + i)
        label = i % CLASSES
        return self.centres[label] + torch.randn(D_IN, generator=g), label


def blobs(seed: int = 0) -> tuple[Blobs, Blobs]:
    return Blobs(1_000_000, 0, seed), Blobs(1024, 10**9, seed)
