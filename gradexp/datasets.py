"""Real datasets, read from their published files: MNIST and Fashion-MNIST (idx files) and
CIFAR-10 (pickled batches), downloaded on first use into a cache directory and checked against
their published MD5 checksums.

Why not torchvision: a torchvision wheel works only beside the exact torch build it was made for.
Beside another (a CPU torch, say) it fails to import (`operator torchvision::nms does not
exist`), and Lightning fails with it through torchmetrics. The two formats are small enough to
read here, which keeps gradexp's dependencies as they are:
- idx (LeCun et al.): a magic number whose third byte is the element type (0x08, unsigned
  bytes) and whose fourth is the number of dimensions, then each dimension as a big-endian
  uint32, then the values;
- CIFAR-10 (Krizhevsky 2009): a tar.gz of pickled dicts, each with b"data", 10000 rows of 3072
  bytes (the red, green and blue 32x32 planes), and b"labels".

A download goes to a temporary file beside its final name and is renamed only once its checksum
matches, so an interrupted download never leaves a file that reads as the dataset. A file
already in the cache is read as it is: the user may have put it there by hand.
"""

import gzip
import hashlib
import os
import pickle
import shutil
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from gradexp.config.errors import ConfigError

DOWNLOAD_TIMEOUT_S = 60  # per connection attempt and per read


@dataclass(frozen=True)
class Source:
    """Where a dataset's files come from and what they hold."""

    name: str  # the task's name, and the folder in the cache
    files: dict[str, str]  # file name -> its published MD5
    mirrors: tuple[str, ...]  # base URLs, tried in order
    shape: tuple[int, ...]  # one example
    n_train: int  # examples in the training split
    n_test: int  # in the test split, gradexp's validation split
    classes: int = 10


MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
MNIST_FILES += ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
SOURCES = {
    source.name: source
    for source in (
        Source(
            "mnist",
            dict(
                zip(
                    MNIST_FILES,
                    (
                        "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                        "d53e105ee54ea40749a09fcbcd1e9432",
                        "9fb629c4189551a2d022fa330f9573f3",
                        "ec29112dd5afa0611ce80d1b7f02629c",
                    ),
                )
            ),
            ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
            (1, 28, 28),
            60000,
            10000,
        ),
        Source(
            "fashion_mnist",
            dict(
                zip(
                    MNIST_FILES,
                    (
                        "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                        "25c81989df183df01b3e8a0aad5dffbe",
                        "bef4ecab320f06d8554ea6380940ec79",
                        "bb300cfdad3c16e7a12a480ee83cd310",
                    ),
                )
            ),
            ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
            (1, 28, 28),
            60000,
            10000,
        ),
        Source(
            "cifar10",
            {"cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a"},
            ("https://www.cs.toronto.edu/~kriz/",),
            (3, 32, 32),
            50000,
            10000,
        ),
    )
}


def data_dir(configured: str | None) -> Path:
    """task.data_dir, else $GRADEXP_DATA, else the user's cache: ~/.cache/gradexp/datasets."""
    chosen = configured or os.environ.get("GRADEXP_DATA")
    if chosen:
        return Path(chosen).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "gradexp" / "datasets"


def load(name: str, configured_dir: str | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(train images, train labels, test images, test labels): images as uint8 (n, *shape),
    labels as int64, each split whole and in its file's order. A split may hold fewer examples
    than the published one (a subset the user made in the same format); never another shape."""
    source = SOURCES[name]
    folder = data_dir(configured_dir) / name
    paths = {file: fetch(source, file, folder) for file in source.files}
    if name == "cifar10":
        x_train, y_train, x_test, y_test = read_cifar10(paths["cifar-10-python.tar.gz"])
    else:
        x_train, y_train, x_test, y_test = (read_idx(paths[file]) for file in MNIST_FILES)
        x_train, x_test = x_train.unsqueeze(1), x_test.unsqueeze(1)  # one channel
    for x, y in ((x_train, y_train), (x_test, y_test)):
        if x.shape[1:] != source.shape or y.shape != x.shape[:1] or (y.numel() and y.max() >= source.classes):
            expected = f"images of shape {source.shape}, a label in [0, {source.classes}) each"
            raise _unreadable(name, folder, expected, f"{tuple(x.shape)} and {tuple(y.shape)} labels")
    return x_train, y_train.long(), x_test, y_test.long()


def fetch(source: Source, file: str, folder: Path) -> Path:
    """The file's path in the cache, downloaded first if it is not there."""
    path = folder / file
    if path.is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    failures = []
    for mirror in source.mirrors:
        partial = path.with_name(f".{file}.{os.getpid()}.part")
        try:
            with urllib.request.urlopen(mirror + file, timeout=DOWNLOAD_TIMEOUT_S) as response:
                with open(partial, "wb") as out:
                    shutil.copyfileobj(response, out)
            found = md5(partial)
            if found != source.files[file]:
                failures.append(f"{mirror}{file} has MD5 {found}, not the published {source.files[file]}")
                continue
            partial.replace(path)
            return path
        except OSError as error:  # URLError, a timeout, a refused connection, a full disk
            failures.append(f"{mirror}{file}: {getattr(error, 'reason', None) or error}")
        finally:
            partial.unlink(missing_ok=True)
    raise ConfigError(
        "task",
        source.name,
        f"{file} is not in {folder} and could not be downloaded ({'; '.join(failures)})",
        "the published file put there by hand, or task.data_dir (or $GRADEXP_DATA) set to a folder with it",
    )


def md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_idx(path: Path) -> Tensor:
    """An idx file of unsigned bytes (gzipped or not) as a uint8 tensor of its dimensions."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as error:
        raise _unreadable(path.parent.name, path.parent, "an idx file", str(error)) from None
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise _unreadable(path.parent.name, path, "an idx file of unsigned bytes", data[:4].hex() or "empty")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    start = 4 + 4 * ndim
    count = 1
    for d in dims:
        count *= d
    if len(data) != start + count:
        raise _unreadable(path.parent.name, path, f"{start + count} bytes for dims {dims}", len(data))
    return torch.frombuffer(bytearray(data[start:]), dtype=torch.uint8).reshape(dims)


def read_cifar10(archive: Path) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """CIFAR-10's python archive: data_batch_1..5 (training) and test_batch."""
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    batches = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar.getmembers():
                if member.isfile() and Path(member.name).name in names:
                    # CIFAR-10's own batches, written with Python 2's pickle; a file from elsewhere
                    # could run code when unpickled, so only these member names are read
                    batch = pickle.load(tar.extractfile(member), encoding="bytes")  # noqa: S301
                    batches[Path(member.name).name] = batch
    except (OSError, EOFError, tarfile.TarError, pickle.UnpicklingError) as error:
        raise _unreadable("cifar10", archive, "CIFAR-10's python archive", str(error)) from None
    missing = [n for n in names if n not in batches]
    if missing:
        raise _unreadable("cifar10", archive, "data_batch_1..5 and test_batch", f"no {', '.join(missing)}")

    def split(keys: list[str]) -> tuple[Tensor, Tensor]:
        rows = b"".join(bytes(batches[k][b"data"]) for k in keys)
        labels = [label for k in keys for label in batches[k][b"labels"]]
        x = torch.frombuffer(bytearray(rows), dtype=torch.uint8).reshape(-1, 3, 32, 32)
        return x, torch.tensor(labels, dtype=torch.long)

    return (*split(names[:5]), *split(names[5:]))


def _unreadable(name: str, where: Path, expected: str, found: object) -> ConfigError:
    return ConfigError(
        "task",
        name,
        f"{where} does not read as {expected} (found {found})",
        "the published files (delete them to download them again)",
    )
