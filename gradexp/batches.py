"""The training batches: which examples make each one (`BatchOrder`), and where they are read
from: tensors on the training device (`Batches`), or a dataset streamed through a DataLoader
(`StreamedBatches`, for data larger than memory). Both follow the same seeded order, so a run
gives the same numbers whichever reads its data, and a checkpoint of either resumes either.
"""

import torch
from torch import Tensor

from gradexp import distributed
from gradexp.distributed import Group
from gradexp.streaming import StreamedData
from gradexp.tasks import Task


class BatchOrder:
    """Shuffled mini-batches, epoch after epoch, dropping each epoch's incomplete tail. The order
    comes from a CPU generator so it is the same on every device (one index copy per epoch to
    `device`). With several processes each takes its share of every batch, in the same order."""

    def __init__(self, n: int, batch_size: int, seed: int, group: Group, device: torch.device):
        self.n, self.batch_size, self.group, self.device = n, batch_size, group, device
        self._generator = torch.Generator().manual_seed(seed + 1)
        self._order, self._pos = None, 0

    def next(self) -> Tensor:
        """The indices of this process's share of the next batch."""
        if self._order is None or self._pos + self.batch_size > self.n:
            order = torch.randperm(self.n, generator=self._generator)
            self._order, self._pos = order.to(self.device, non_blocking=True), 0
        idx = self._order[self._pos : self._pos + self.batch_size]
        self._pos += self.batch_size
        return distributed.shard(idx, self.group)

    def copy(self) -> "BatchOrder":
        """An order that goes on from where this one is, on its own."""
        twin = BatchOrder(self.n, self.batch_size, 0, self.group, self.device)
        twin.load_state_dict(self.state_dict())
        return twin

    def state_dict(self) -> dict:
        order = None if self._order is None else self._order.cpu()
        return {"generator": self._generator.get_state(), "order": order, "pos": self._pos}

    def load_state_dict(self, state: dict) -> None:
        self._generator.set_state(state["generator"])
        order = state["order"]
        self._order = None if order is None else order.to(self.device)
        self._pos = state["pos"]


class Batches:
    """Batches indexed out of the task's tensors, on the training device: the input pipeline
    costs nothing next to the gradients being studied."""

    def __init__(self, task: Task, batch_size: int, seed: int, group: Group = distributed.ALONE):
        self.task = task
        self.order = BatchOrder(task.n_train, batch_size, seed, group, task.x_train.device)

    def next(self) -> tuple[Tensor, Tensor]:
        idx = self.order.next()
        return self.task.x_train[idx], self.task.y_train[idx]

    def state_dict(self) -> dict:
        return self.order.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.order.load_state_dict(state)

    def close(self) -> None:
        pass


class StreamedBatches:
    """Batches read from a dataset through a DataLoader, `data.workers` worker processes reading
    ahead. The loader's sampler runs its own copy of the order (ahead, as far as the workers
    prefetch); `order` is the cursor of the batches actually trained on, which a checkpoint
    keeps, so a resumed run reads on from the first batch it had not trained on."""

    def __init__(self, data: StreamedData, batch_size: int, seed: int, group: Group, device: torch.device):
        self.data, self.device = data, device
        self.order = BatchOrder(len(data.train), batch_size, seed, group, torch.device("cpu"))
        self._batches = None  # the loader's iterator, started at the first batch asked for

    def next(self) -> tuple[Tensor, Tensor]:
        if self._batches is None:
            self._batches = iter(self.data.loader(_Sampler(self.order.copy()), self.device))
        self.order.next()
        x, y = next(self._batches)
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def state_dict(self) -> dict:
        return self.order.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.order.load_state_dict(state)
        self.close()  # the next batch starts a loader from here

    def close(self) -> None:
        """Stop the worker processes (the loader's iterator shuts them down when dropped)."""
        self._batches = None


class _Sampler:
    """The batches of `order`, one list of indices after another, for as long as asked."""

    def __init__(self, order: BatchOrder):
        self.order = order

    def __iter__(self):
        while True:
            yield self.order.next().tolist()
