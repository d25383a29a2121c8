"""Data larger than memory: `task=custom` datasets read batch by batch through a torch
DataLoader (`trainer.workers` worker processes; 0 reads in the training process) instead of
once into tensors on the training device.

What stays the same: the batch order, drawn from trainer.seed as for data in memory, and the
evaluation (the whole validation set, and as many training examples): a streamed run and the
same run with its data in memory give the same numbers. The workers' seeds come from a
generator of their own, not torch's global one, so streaming changes no other random number the
run draws. What it costs: an epoch's order is one permutation of the indices, 8 bytes an
example.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset, default_collate

WORKER_SEED_OFFSET = 2  # the workers' base seed: trainer.seed + 2 (the batch order takes + 1)


@dataclass
class StreamedData:
    train: Dataset
    val: Dataset
    workers: int
    seed: int
    convert: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]  # a batch's (x, y) as the loss takes them
    _evaluation: dict[str, DataLoader] = field(default_factory=dict)  # kept: their workers persist

    def collate(self, items: list) -> tuple[Tensor, Tensor]:
        x, y = default_collate(items)
        return self.convert(torch.as_tensor(x), torch.as_tensor(y))

    def first(self, split: str, k: int) -> tuple[Tensor, Tensor]:
        """The split's first `k` examples as one batch: what the model is built and checked on."""
        dataset = getattr(self, split)
        return self.collate([dataset[i] for i in range(min(k, len(dataset)))])

    def loader(self, batch_sampler, device: torch.device) -> DataLoader:
        """The training batches `batch_sampler` names, read by the workers."""
        return self._loader(self.train, device, batch_sampler=batch_sampler)

    def chunks(self, split: str, n: int, size: int, device: torch.device) -> Iterator[tuple[Tensor, Tensor]]:
        """The split's first `n` examples, `size` at a time, in order, on `device`."""
        if split not in self._evaluation:
            dataset = getattr(self, split)
            first = Subset(dataset, range(min(n, len(dataset))))
            self._evaluation[split] = self._loader(
                first, device, batch_size=size, persistent_workers=self.workers > 0
            )
        for x, y in self._evaluation[split]:
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)

    def _loader(self, dataset: Dataset, device: torch.device, **order) -> DataLoader:
        """A loader of `dataset` by this data's workers, collated as the loss takes it, pinned
        for a copy to CUDA, its workers seeded from their own generator; `order` says which
        examples make each batch (and whether its workers outlive one pass)."""
        return DataLoader(
            dataset,
            num_workers=self.workers,
            collate_fn=self.collate,
            pin_memory=device.type == "cuda",
            generator=torch.Generator().manual_seed(self.seed + WORKER_SEED_OFFSET),
            **order,
        )

    def close(self) -> None:
        """Stop the evaluation loaders' workers."""
        self._evaluation.clear()
