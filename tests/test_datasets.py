"""The published datasets, read from files these tests write in the published formats (idx for
MNIST and Fashion-MNIST, pickled batches in a tar.gz for CIFAR-10); the download path runs
against a local HTTP server. Nothing is fetched from the internet."""

import gzip
import hashlib
import http.server
import io
import pickle
import shutil
import signal
import tarfile
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from gradexp import checkpoint, datasets
from gradexp.config.errors import ConfigError
from gradexp.config.validate import validate
from gradexp.engine import train
from gradexp.models import build_model
from gradexp.stopping import RunStopped, stop_requests
from gradexp.tasks import build_task
from tests.conftest import make_config, read_summary, run_cli

SMALL = ["trainer.steps=3", "trainer.batch_size=8", "trainer.eval_every=2", "diagnostics.figures=false"]


def write_idx(path: Path, values: torch.Tensor) -> None:
    """An idx file of unsigned bytes, gzipped, as MNIST publishes them."""
    header = bytes([0, 0, 0x08, values.dim()]) + b"".join(d.to_bytes(4, "big") for d in values.shape)
    path.write_bytes(gzip.compress(header + values.to(torch.uint8).numpy().tobytes()))


def write_mnist(folder: Path, n_train: int = 64, n_test: int = 32, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    data = {
        "train-images-idx3-ubyte.gz": torch.randint(0, 256, (n_train, 28, 28), generator=g),
        "train-labels-idx1-ubyte.gz": torch.arange(n_train) % 10,
        "t10k-images-idx3-ubyte.gz": torch.randint(0, 256, (n_test, 28, 28), generator=g),
        "t10k-labels-idx1-ubyte.gz": torch.arange(n_test) % 10,
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, values in data.items():
        write_idx(folder / name, values)
    return data


def write_cifar10(archive: Path, per_batch: int = 20, seed: int = 0) -> tuple[np.ndarray, list[int]]:
    """cifar-10-python.tar.gz: cifar-10-batches-py/data_batch_1..5 and test_batch, each a pickled
    dict of a uint8 array of rows (3072 bytes: the red, green and blue planes) and labels. Each
    label is its image's first byte mod 10, so a test can tell whether they stayed together."""
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            batch = {
                b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            }
            batch[b"labels"] = [int(row[0]) % 10 for row in batch[b"data"]]
            rows.append(batch[b"data"])
            labels += batch[b"labels"]
            blob = pickle.dumps(batch, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return np.concatenate(rows), labels


def test_mnist_files_read_back_pixel_for_pixel_and_label_for_label(tmp_path):
    written = write_mnist(tmp_path / "mnist")
    x_train, y_train, x_test, y_test = datasets.load("mnist", str(tmp_path))
    assert x_train.shape == (64, 1, 28, 28) and x_test.shape == (32, 1, 28, 28)
    assert torch.equal(x_train[:, 0].long(), written["train-images-idx3-ubyte.gz"])
    assert torch.equal(y_train, written["train-labels-idx1-ubyte.gz"])
    assert torch.equal(x_test[:, 0].long(), written["t10k-images-idx3-ubyte.gz"])
    assert torch.equal(y_test, written["t10k-labels-idx1-ubyte.gz"])


def test_cifar10_archive_reads_back_as_images_of_three_planes(tmp_path):
    rows, labels = write_cifar10(tmp_path / "cifar10" / "cifar-10-python.tar.gz")
    x_train, y_train, x_test, y_test = datasets.load("cifar10", str(tmp_path))
    assert x_train.shape == (100, 3, 32, 32) and x_test.shape == (20, 3, 32, 32)
    image = x_train[7]  # row 7 of data_batch_1: 1024 red bytes, then green, then blue
    assert torch.equal(image[0].flatten(), torch.from_numpy(rows[7][:1024]))
    assert torch.equal(image[2].flatten(), torch.from_numpy(rows[7][2048:]))
    assert torch.equal(x_train.flatten(1), torch.from_numpy(rows[:100]))
    assert torch.equal(x_test.flatten(1), torch.from_numpy(rows[100:]))
    assert y_train.tolist() == labels[:100] and y_test.tolist() == labels[100:]


def test_a_task_is_standardized_per_channel_on_its_training_split_and_drawn_by_the_seed(tmp_path):
    rows, _ = write_cifar10(tmp_path / "cifar10" / "cifar-10-python.tar.gz")
    planes = torch.from_numpy(rows[:100]).double().view(100, 3, 1024).transpose(0, 1).flatten(1)
    mean, std = planes.mean(dim=1).view(1, 3, 1, 1), planes.std(dim=1).view(1, 3, 1, 1)
    config = validate(
        make_config("task=cifar10", f"task.data_dir={tmp_path}", "task.n_train=100", "task.n_val=20")
    )
    task = build_task(config.task, seed=0)
    per_channel = task.x_train.transpose(0, 1).flatten(1).double()
    assert torch.allclose(per_channel.mean(dim=1), torch.zeros(3, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(per_channel.std(dim=1), torch.ones(3, dtype=torch.float64), atol=1e-5)
    assert task.input_shape == (3, 32, 32) and task.d_out == 10 and task.classification
    fewer = validate(
        make_config(
            "task=cifar10",
            f"task.data_dir={tmp_path}",
            "task.n_train=30",
            "task.n_val=5",
            "trainer.batch_size=8",
        )
    )
    one, again, other = (build_task(fewer.task, seed) for seed in (1, 1, 2))
    assert one.x_train.shape == (30, 3, 32, 32) and torch.equal(one.x_train, again.x_train)
    assert not torch.equal(one.x_train, other.x_train)  # another seed, another subset
    raw = (one.x_train.double() * std + mean).round()  # the whole split's statistics undone
    assert torch.allclose(one.x_train.double() * std + mean, raw, atol=1e-3) and raw.min() >= 0
    assert torch.equal(raw[:, 0, 0, 0].long() % 10, one.y_train)  # each label with its image


@pytest.mark.parametrize(
    "model, task", [("cnn", "mnist"), ("mlp", "fashion_mnist"), ("cnn", "cifar10"), ("mlp", "cifar10")]
)
def test_the_cnn_and_the_mlp_train_on_each_dataset_from_the_cli(tmp_path, model, task):
    if task == "cifar10":
        write_cifar10(tmp_path / "data" / task / "cifar-10-python.tar.gz")
    else:
        write_mnist(tmp_path / "data" / task)
    sizes = (
        ["task.n_train=64", "task.n_val=16"] if task != "cifar10" else ["task.n_train=100", "task.n_val=20"]
    )
    cnn = ["model.depth=2", "model.channels=4"] if model == "cnn" else ["model.depth=2", "model.width=16"]
    data = f"task.data_dir={tmp_path / 'data'}"
    result = run_cli(f"model={model}", f"task={task}", data, *cnn, *sizes, *SMALL, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = read_summary(next((tmp_path / "outputs").glob("**/summary.json")).parent)
    assert summary["status"] == "completed" and summary["final_val_acc"] is not None


def test_the_rnn_reads_an_image_row_by_row_and_its_gradient_through_time_spans_the_rows(tmp_path):
    """Le et al. (2015)'s row MNIST: 28 steps of 28 pixels; the gradient through time has a
    value for every row."""
    write_mnist(tmp_path / "data" / "mnist")
    args = [
        "model=rnn",
        "task=mnist",
        f"task.data_dir={tmp_path / 'data'}",
        "task.n_train=64",
        "task.n_val=16",
    ]
    args += ["model.hidden_size=16", *SMALL, "diagnostics.every=1"]
    summary = train(make_config(*args, tiny=False), tmp_path / "run", show_progress=False)
    assert summary["status"] == "completed"
    through_time = summary["grad_through_time_first"]
    assert len(through_time) == 1 and len(next(iter(through_time.values()))) == 28
    config = validate(make_config(*args, tiny=False))
    model = build_model(config, build_task(config.task, 0))
    assert model.rnn.input_size == 28
    image = torch.arange(2 * 28 * 28, dtype=torch.float32).view(2, 1, 28, 28)
    assert torch.equal(model.read(image)[1, 5], image[1, 0, 5])  # step 5 of example 1: its row 5


class Mirror:
    """A local HTTP server over a folder: a dataset mirror that the tests control."""

    def __init__(self, folder: Path):
        handler = lambda *args: http.server.SimpleHTTPRequestHandler(*args, directory=str(folder))  # noqa: E731
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """MNIST served locally, with the MD5s of the files served as the published ones."""
    served = tmp_path / "served"
    write_mnist(served)
    server = Mirror(served)
    sums = {name: md5(served / name) for name in datasets.MNIST_FILES}
    monkeypatch.setitem(
        datasets.SOURCES, "mnist", replace(datasets.SOURCES["mnist"], files=sums, mirrors=(server.url,))
    )
    yield served
    server.close()


def test_a_missing_dataset_is_downloaded_checked_and_then_read_from_the_cache(tmp_path, mirror, capsys):
    cache = tmp_path / "cache"
    args = ["task=mnist", f"task.data_dir={cache}", "task.n_train=64", "task.n_val=16", *SMALL]
    summary = train(make_config(*args), tmp_path / "run", show_progress=False)
    assert summary["status"] == "completed"
    said = capsys.readouterr().err.splitlines()
    size = (mirror / "train-images-idx3-ubyte.gz").stat().st_size / 2**20
    url = datasets.SOURCES["mnist"].mirrors[0]
    assert (
        f"gradexp: downloading {url}train-images-idx3-ubyte.gz ({size:.2g} MB) into {cache / 'mnist'}" in said
    )
    for name in datasets.MNIST_FILES:
        assert (cache / "mnist" / name).read_bytes() == (mirror / name).read_bytes()
    assert sorted(p.name for p in (cache / "mnist").iterdir()) == sorted(
        datasets.MNIST_FILES
    )  # no part files
    shutil.rmtree(mirror)  # the mirror gone: the cache serves
    assert train(make_config(*args), tmp_path / "again", show_progress=False)["status"] == "completed"


def test_the_first_ctrl_c_stops_a_download_at_once_and_leaves_nothing(tmp_path, mirror, monkeypatch):
    monkeypatch.setattr(datasets, "CHUNK_BYTES", 1024)  # the stop is checked between chunks
    with stop_requests() as request:
        request.signum = signal.SIGINT  # as the first Ctrl-C leaves it: noted, nothing raised
        with pytest.raises(RunStopped):
            datasets.load("mnist", str(tmp_path / "cache"))
    assert list((tmp_path / "cache" / "mnist").iterdir()) == []


def test_a_download_whose_checksum_differs_is_refused_and_leaves_nothing(tmp_path, mirror, monkeypatch):
    source = datasets.SOURCES["mnist"]
    wrong = {**source.files, "train-images-idx3-ubyte.gz": "0" * 32}
    monkeypatch.setitem(datasets.SOURCES, "mnist", replace(source, files=wrong))
    with pytest.raises(ConfigError) as caught:
        datasets.load("mnist", str(tmp_path / "cache"))
    message = str(caught.value)
    assert message.startswith("task=mnist: train-images-idx3-ubyte.gz is not in ") and "\n" not in message
    assert f"has MD5 {md5(mirror / 'train-images-idx3-ubyte.gz')}, not the published {'0' * 32}" in message
    assert not (tmp_path / "cache" / "mnist" / "train-images-idx3-ubyte.gz").exists()
    assert not list((tmp_path / "cache" / "mnist").glob(".*part"))


def test_the_cache_is_task_data_dir_else_gradexp_data_else_the_users_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADEXP_DATA", str(tmp_path / "env"))
    assert datasets.data_dir(str(tmp_path / "key")) == tmp_path / "key"
    assert datasets.data_dir(None) == tmp_path / "env"
    monkeypatch.delenv("GRADEXP_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert datasets.data_dir(None) == tmp_path / "xdg" / "gradexp" / "datasets"
    write_mnist(tmp_path / "env" / "mnist")
    monkeypatch.setenv("GRADEXP_DATA", str(tmp_path / "env"))
    assert datasets.load("mnist", None)[0].shape == (64, 1, 28, 28)


def test_offline_and_not_downloaded_is_one_line_naming_the_file_and_the_folder(tmp_path, monkeypatch):
    closed = Mirror(tmp_path)
    url = closed.url
    closed.close()  # nothing listens there any more: a refused connection, as offline
    monkeypatch.setitem(datasets.SOURCES, "mnist", replace(datasets.SOURCES["mnist"], mirrors=(url,)))
    with pytest.raises(ConfigError) as caught:
        datasets.load("mnist", str(tmp_path / "cache"))
    message = str(caught.value)
    assert "\n" not in message and "could not be downloaded" in message and str(tmp_path / "cache") in message
    assert message.endswith(
        "allowed: the published file put there by hand, or task.data_dir "
        "(or $GRADEXP_DATA) set to a folder with it"
    )


def test_a_corrupt_file_or_too_few_examples_is_one_line_from_the_cli(tmp_path):
    folder = tmp_path / "data" / "mnist"
    write_mnist(folder)
    common = ["task=mnist", f"task.data_dir={tmp_path / 'data'}", "task.n_val=16", *SMALL]
    result = run_cli(*common, "task.n_train=65", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert f"task.n_train=65: the files in {folder} hold 64; allowed: an integer <= 64" in result.stderr
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\0\0\x0d\x01"))  # floats, not bytes
    result = run_cli(*common, "task.n_train=64", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "t10k-labels-idx1-ubyte.gz is no idx file of unsigned bytes" in result.stderr


def test_a_pickle_that_names_anything_but_numpy_arrays_is_refused_unrun(tmp_path):
    """A pickle can call whatever it names; a CIFAR-10 archive put in a shared cache by someone
    else must not run their code."""
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    archive = tmp_path / "cifar10" / "cifar-10-python.tar.gz"
    blob = pickle.dumps({b"data": Payload(), b"labels": []}, protocol=2)
    archive.parent.mkdir(parents=True)
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        info.size = len(blob)
        tar.addfile(info, io.BytesIO(blob))
    with pytest.raises(ConfigError) as caught:
        datasets.load("cifar10", str(tmp_path))
    assert "a pickle that names __builtin__.getattr, not a CIFAR-10 batch" in str(caught.value)
    assert not marker.exists()


def test_a_broken_stream_and_a_data_dir_that_is_a_file_are_one_line(tmp_path):
    folder = tmp_path / "data" / "mnist"
    write_mnist(folder)
    packed = (folder / "train-images-idx3-ubyte.gz").read_bytes()
    middle = len(packed) // 2
    (folder / "train-images-idx3-ubyte.gz").write_bytes(packed[:middle] + bytes(64) + packed[middle + 64 :])
    with pytest.raises(ConfigError) as caught:
        datasets.load("mnist", str(tmp_path / "data"))
    message = str(caught.value)
    assert (
        message.startswith(f"task=mnist: {folder} does not read as mnist's published files (")
        and "\n" not in message
    )
    (tmp_path / "a file").write_text("")
    with pytest.raises(ConfigError) as caught:
        datasets.load("mnist", str(tmp_path / "a file"))
    assert str(caught.value) == (
        f"task.data_dir: {tmp_path / 'a file'} cannot hold the downloads (Not a directory); "
        "allowed: a folder gradexp can write to"
    )


def test_a_moved_cache_is_the_same_run_to_resume(tmp_path):
    """task.data_dir says where the files are, not which data: no part of a checkpoint's identity."""
    here, there = (make_config("task=mnist", f"task.data_dir={tmp_path / d}") for d in ("a", "b"))
    assert checkpoint.identity(here) == checkpoint.identity(there)
    assert checkpoint.identity(here) != checkpoint.identity(make_config("task=mnist", "task.n_train=100"))


def test_more_examples_than_the_published_split_is_refused_before_anything_is_read(tmp_path):
    result = run_cli("task=mnist", "task.n_train=60001", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "task.n_train=60001: " in result.stderr and "allowed: an integer in [1, 60000]" in result.stderr
