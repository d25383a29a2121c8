"""One run on several processes: `torchrun --nproc_per_node=N -m gradexp ...`.

Every process trains the same model on its share of each batch, and DistributedDataParallel
averages the gradients during backward, so every process applies the same update: the one a
single process makes on the whole batch. Rank 0 alone writes (events, summary, checkpoints,
figures) and evaluates; the norms it records are those of the synchronized gradient.

Processes must do the same collective operations in the same order, or they wait on each other
for ever. So whatever ends or interrupts a run is decided together: flushes fall on steps that
every process knows in advance (`Pace`), and at each one a single all-reduce carries rank 0's
choice of the next flush step, any process's stop request (Ctrl-C, SIGTERM) and any process's
divergence. Alone, a run flushes about once a second by its own clock and stops at the end of
the step in which its signal came, as before.
"""

import os
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from gradexp.recorder import FLUSH_SECONDS, GradientRecorder
from gradexp.stopping import StopRequest


@dataclass(frozen=True)
class Group:
    """This process's place among the run's processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0  # the process's index on its machine: the CUDA device it takes

    @property
    def leader(self) -> bool:
        """Rank 0: the process that evaluates and writes."""
        return self.rank == 0


ALONE = Group()  # one process, the run's only one


def launched() -> Group:
    """The group torchrun describes in this process's environment (one process without it)."""
    env = os.environ
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return ALONE
    return Group(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)))


def current(environment: bool = False) -> Group:
    """The group of the process group this process has joined. Without one: one process, or
    with `environment` the group torchrun describes (a watched loop may make its monitor before
    it joins its process group)."""
    if dist.is_available() and dist.is_initialized():
        return Group(dist.get_rank(), dist.get_world_size(), launched().local_rank)
    return launched() if environment else ALONE


def join() -> Group:
    """Join the process group torchrun set up: gloo for the CPU, and NCCL for CUDA tensors where
    this machine has CUDA. Call before anything is written, so the processes can agree on the
    run directory."""
    if not dist.is_initialized():
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    return current()


def leave() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def share(value: object, group: Group) -> object:
    """Rank 0's `value`, on every process."""
    if group.size == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def mean_over_processes(value: Tensor, group: Group) -> Tensor:
    """The mean of `value` over the processes (each process's loss on its share of an equal
    split of the batch: their mean is the loss on the whole batch). On CUDA the all-reduce is
    queued on the device, so the host does not wait for it."""
    if group.size == 1:
        return value
    total = value.detach().clone()
    dist.all_reduce(total)
    return total / group.size


def shard(indices: Tensor, group: Group) -> Tensor:
    """This process's contiguous share of a batch's indices (the batch size is a multiple of
    the number of processes)."""
    if group.size == 1:
        return indices
    return indices.chunk(group.size)[group.rank]


class Pace:
    """When a run flushes its measurements, and whether it stops there.

    Alone: whenever the recorder's clock says a flush is due (about once a second), and a
    signal stops the run at the end of its step. With several processes: on steps known to all
    of them. Rank 0 picks the next one at each flush so that flushes stay about a second apart;
    the same all-reduce tells every process whether any of them was signalled or has seen the
    run diverge, so they stop together, at the same step."""

    def __init__(self, recorder: GradientRecorder, group: Group, device: torch.device):
        self.recorder, self.group, self.device = recorder, group, device
        self.stop = StopRequest()  # the training loop's, which its signal handlers set
        self.next_flush = 0  # several processes: the step after which they flush next
        self.stop_signum: int | None = None  # several processes: the stop request they agreed on
        self.diverged = False  # the run diverged (alone: by the last flush; else: on any process)
        self._since = (time.monotonic(), 0)  # (time, step) of the last flush

    def due(self, step: int) -> bool:
        if self.group.size == 1:
            return self.recorder.due()
        return step >= self.next_flush

    def stopping(self) -> bool:
        """Whether the run stops after this step (its checkpoint comes first): alone as soon as
        the signal came, with several processes once they have agreed on it."""
        return (self.stop.signum if self.group.size == 1 else self.stop_signum) is not None

    def agree(self, step: int) -> None:
        """Right after a flush (with several processes: one that every process makes)."""
        if self.group.size == 1:
            self.diverged = self.recorder.divergence is not None
            return
        now = time.monotonic()
        last_time, last_step = self._since
        steps_per_flush = (step + 1 - last_step) * FLUSH_SECONDS / max(now - last_time, 1e-6)
        next_flush = step + max(1, round(steps_per_flush)) if self.group.leader else 0
        signum, diverged = self.stop.signum or 0, int(self.recorder.divergence is not None)
        flags = torch.tensor([next_flush, signum, diverged], dtype=torch.int64, device=self.device)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        next_flush, signum, diverged = flags.tolist()
        self.next_flush, self._since = next_flush, (now, step + 1)
        self.stop_signum, self.diverged = signum or None, bool(diverged)

    def check(self) -> None:
        """Raise RunStopped where the run must stop now (see `stopping`)."""
        if self.group.size > 1:
            if self.stop_signum is None:  # not agreed yet, even where a signal came
                return
            self.stop.signum = self.stop.signum or self.stop_signum
        self.stop.check()
