"""trainer.workers: task=custom's datasets streamed through a DataLoader, for data larger than
memory. The batch order is the seed's, as for data read into memory, so the numbers are the same;
only the batches trained on are read; an interrupted streamed run resumes to the run never
interrupted; a mistake is one line naming the key."""

import random
import textwrap

import pytest

from gradexp.engine import train
from tests.conftest import make_config, read_scalars, run_in_process, whole_and_resumed

DATA = textwrap.dedent(
    """
    import torch
    from torch.utils.data import Dataset

    READS = []  # (split, index) of every example read in this process

    class Generated(Dataset):
        '''n examples made from their index when read: none is held in memory.'''

        classes = ["low", "middle", "high"]

        def __init__(self, n, split):
            self.n, self.split = n, split

        def __len__(self):
            return self.n

        def __getitem__(self, i):
            if not 0 <= i < self.n:
                raise IndexError(i)
            READS.append((self.split, i))
            g = torch.Generator().manual_seed(i if self.split == "train" else 10**9 + i)
            x = torch.randn(8, generator=g)
            return x, int(x[0] > -0.4) + int(x[0] > 0.4)

    class Unlabelled(Generated):
        classes = None

    def small():
        return Generated(600, "train"), Generated(200, "val")

    def huge():  # 10 million examples of 8 floats: 320 MB were they read in, and 100 s to read
        return Generated(10**7, "train"), Generated(200, "val")

    def no_classes():
        return Unlabelled(600, "train"), Unlabelled(200, "val")

    def tensors():
        x = torch.randn(100, 8)
        return x[:80], (x[:80, 0] > 0).long(), x[80:], (x[80:, 0] > 0).long()
    """
)
RUN = [
    "trainer.steps=40",
    "trainer.batch_size=32",
    "trainer.eval_every=10",
    "trainer.log_every=1",
    "model.width=16",
    "model.depth=3",
]


@pytest.fixture
def in_data_dir(tmp_path, monkeypatch):
    (tmp_path / "streamed.py").write_text(DATA)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def config(*overrides: str):
    return make_config("task=custom", *RUN, *overrides, tiny=False)


def test_streamed_data_gives_the_numbers_of_the_same_data_in_memory(in_data_dir):
    runs = {}
    for workers in ("null", "0", "2"):
        cfg = config("task._target_=streamed.small", f"trainer.workers={workers}")
        runs[workers] = train(cfg, in_data_dir / workers, show_progress=False)
        assert runs[workers]["status"] == "completed"
    for workers in ("0", "2"):  # 40 batches of 32 from 600 examples: the order crosses an epoch
        for key in (
            "grad_norm_first",
            "grad_norm_last",
            "final_train_loss",
            "final_val_loss",
            "final_val_acc",
        ):
            assert runs[workers][key] == runs["null"][key], (workers, key)
        assert read_scalars(in_data_dir / workers) == read_scalars(in_data_dir / "null")


def test_only_the_batches_trained_on_are_read(in_data_dir):
    import streamed

    streamed.READS.clear()
    summary = train(config("task._target_=streamed.huge", "trainer.workers=0"), in_data_dir / "r", False)
    assert summary["status"] == "completed"
    train_reads = [i for split, i in streamed.READS if split == "train"]
    # the first 2 examples (to build the model on), 40 batches of 32, and the training loss
    # measured at the end on as many examples as the validation set holds (200)
    assert len(train_reads) == 2 + 40 * 32 + 200
    assert max(train_reads) > 10**6  # drawn from the whole set, not its start
    assert summary["final_val_acc"] is not None


def test_an_interrupted_streamed_run_resumes_to_the_run_never_interrupted(in_data_dir):
    # 1200 steps, about 7 s: still training when Ctrl-C comes; two workers read ahead of the
    # step the checkpoint keeps, and the resumed run reads on from there
    args = [
        "task=custom",
        "task._target_=streamed.small",
        "trainer.workers=2",
        *RUN[1:],
        "trainer.steps=1200",
    ]
    args += ["trainer.log_every=50", "trainer.eval_every=500", "trainer.checkpoint_every=70"]
    whole, cut = whole_and_resumed(args, in_data_dir, wait=random.uniform(0.3, 1.0))
    for key in ("grad_norm_last", "final_train_loss", "final_val_loss", "final_val_acc"):
        assert cut[key] == whole[key], key
    assert read_scalars(in_data_dir / "cut") == read_scalars(in_data_dir / "whole")


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (
            ["task=blobs", "trainer.workers=2"],
            "trainer.workers=2: task=blobs lives in memory; only task=custom's datasets stream; "
            "allowed: null",
        ),
        (
            ["task=custom", "task._target_=streamed.small", "trainer.workers=-1"],
            "trainer.workers=-1: out of range; allowed: an integer >= 0 or null",
        ),
        (
            ["task=custom", "task._target_=streamed.tensors", "trainer.workers=0"],
            "trainer.workers=0: streams datasets; streamed.tensors returned a tuple of 4, in memory "
            "already; allowed: null, or a function that returns (train_set, val_set)",
        ),
        (
            ["task=custom", "task._target_=streamed.no_classes", "trainer.workers=0"],
            "task.outputs=null: streamed data is not read ahead to count its classes (and its dataset "
            "has no .classes); allowed: the number of classes",
        ),
    ],
)
def test_a_streaming_mistake_is_one_line(in_data_dir, monkeypatch, capsys, overrides, expected):
    result = run_in_process(
        *overrides, "trainer.steps=3", cwd=in_data_dir, monkeypatch=monkeypatch, capsys=capsys
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"gradexp: error: {expected}"
