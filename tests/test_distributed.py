"""`gradexp.watch` under DistributedDataParallel, started by torchrun with the gloo backend on
the CPU: rank 0 alone writes, and what it records is the synchronized gradient, the one a
single process computes on the two ranks' batches put together."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import read_scalars

LOOP = """
import os, sys, torch, torch.distributed as dist
from torch import nn
import torch.nn.functional as F
import gradexp

distributed = "RANK" in os.environ
if distributed:
    dist.init_process_group("gloo")
rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 3))
g = torch.Generator().manual_seed(1)
x, y = torch.randn(64, 8, generator=g), torch.randint(0, 3, (64,), generator=g)
x, y = x.chunk(world)[rank], y.chunk(world)[rank]  # this rank's half of the batch
net = nn.parallel.DistributedDataParallel(model) if distributed else model
opt = torch.optim.SGD(net.parameters(), lr=0.5)
with gradexp.watch(net, opt, sys.argv[1], log_every=1, diagnostics_every=2, report=False) as monitor:
    for step in range(6):
        opt.zero_grad()
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        monitor.step(loss)
        opt.step()
print("rank", rank, "recording", monitor.recording, flush=True)
if distributed:
    dist.barrier()  # gloo can abort a rank that tears its group down while another still writes
    dist.destroy_process_group()
"""


def test_two_ddp_processes_record_the_norms_of_one_process_on_their_batches_together(tmp_path):
    script = tmp_path / "loop.py"
    script.write_text(textwrap.dedent(LOOP))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "one")], capture_output=True, text=True, env=env
    )
    assert single.returncode == 0, single.stderr
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    two = subprocess.run(
        [*torchrun, str(script), str(tmp_path / "two")], capture_output=True, text=True, env=env, timeout=120
    )
    assert two.returncode == 0, two.stderr
    assert sorted(line for line in two.stdout.splitlines() if line.startswith("rank")) == [
        "rank 0 recording True",
        "rank 1 recording False",
    ]
    assert len(list((tmp_path / "two").glob("events.out.tfevents.*"))) == 1  # rank 0's file alone
    one, both = read_scalars(tmp_path / "one"), read_scalars(tmp_path / "two")
    layers = json.loads((tmp_path / "two" / "summary.json").read_text())["layers"]
    for tag in [f"grad_norm/{name}" for name in layers] + [f"update_ratio/{layers[0]}", "grad_norm/total"]:
        assert list(both[tag]) == list(one[tag])
        assert list(both[tag].values()) == pytest.approx(list(one[tag].values()), rel=1e-5), tag
