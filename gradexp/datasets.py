"""Real datasets, read from their published files: MNIST and Fashion-MNIST (idx files) and
CIFAR-10 (pickled batches), downloaded on first use into a cache directory and checked against
their published MD5 checksums.

Why not torchvision: a torchvision wheel works only beside the exact torch build it was made for.
Beside another (a CPU torch, say) it fails to import (`operator torchvision::nms does not
exist`), and Lightning fails with it through torchmetrics. The two formats are small enough to
read here, which keeps gradexp's dependencies as they are:
- idx (LeCun et al.): a magic number whose third byte is the element type (0x08, unsigned
  bytes) and whose fourth is the number of dimensions, then each dimension as a big-endian
  uint32, then the values; published gzipped;
- CIFAR-10 (Krizhevsky 2009): a tar.gz of pickled dicts, each with b"data", rows of 3072 bytes
  (the red, green and blue 32x32 planes), and b"labels". The pickles are read by an unpickler
  that builds numpy arrays and nothing else: a pickle can run any code it names, and the cache
  may be a folder others can write to.

A download goes to a temporary file beside its final name and is renamed only once its checksum
matches, so an interrupted download never leaves a file that reads as the dataset. A file
already in the cache is read as it is: the user may have put it there by hand.
"""

import gzip
import hashlib
import http.client
import math
import os
import pickle
import sys
import tarfile
import urllib.request
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from gradexp.config.errors import NO_VALUE, ConfigError, first_line
from gradexp.stopping import check_stop

DOWNLOAD_TIMEOUT_S = 60  # per connection attempt and per read
CHUNK_BYTES = 1 << 20
# What reading a file may raise when its bytes are not the format (besides OSError and EOFError)
MALFORMED = (
    zlib.error,
    tarfile.TarError,
    pickle.UnpicklingError,
    ValueError,
    KeyError,
    TypeError,
    IndexError,
)
Splits = tuple[Tensor, Tensor, Tensor, Tensor]  # train images, train labels, test images, test labels


@dataclass(frozen=True)
class Source:
    """Where a dataset's files come from, what they hold and how they are read."""

    name: str  # the task's name, and the folder in the cache
    files: dict[str, str]  # file name -> its published MD5
    mirrors: tuple[str, ...]  # base URLs, tried in order
    shape: tuple[int, ...]  # one example
    n_train: int  # examples in the training split
    n_test: int  # in the test split, gradexp's validation split
    read: Callable[[dict[str, Path]], Splits]  # the files' paths -> the splits, as uint8 and int64
    classes: int = 10


MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
MNIST_FILES += ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"


def load(name: str, configured_dir: str | None) -> Splits:
    """(train images, train labels, test images, test labels): images as uint8 (n, *shape),
    labels as int64, each split whole and in its file's order. A split may hold fewer examples
    than the published one (a subset the user made in the same format); never another shape."""
    source = SOURCES[name]
    folder = data_dir(configured_dir) / name
    paths = {file: fetch(source, file, folder) for file in source.files}
    try:
        splits = source.read(paths)
    except (OSError, EOFError, *MALFORMED) as error:
        raise _unreadable(name, folder, f"{name}'s published files", first_line(error)) from None
    for x, y in (splits[:2], splits[2:]):
        labels_ok = y.numel() == 0 or (int(y.min()) >= 0 and int(y.max()) < source.classes)
        if x.shape[1:] != source.shape or y.shape != x.shape[:1] or not labels_ok:
            expected = f"images of shape {source.shape}, a label in [0, {source.classes}) each"
            found = f"images of shape {tuple(x.shape)}, labels of shape {tuple(y.shape)}"
            if y.numel():
                found += f" in [{int(y.min())}, {int(y.max())}]"
            raise _unreadable(name, folder, expected, found)
    return splits


def data_dir(configured: str | None) -> Path:
    """task.data_dir, else $GRADEXP_DATA, else the user's cache: $XDG_CACHE_HOME/gradexp/datasets
    (~/.cache/gradexp/datasets)."""
    chosen = configured or os.environ.get("GRADEXP_DATA")
    if chosen:
        return Path(chosen).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "gradexp" / "datasets"


def fetch(source: Source, file: str, folder: Path) -> Path:
    """The file's path in the cache, downloaded first if it is not there."""
    path = folder / file
    if path.is_file():
        return path
    if path.exists():
        raise _unreadable(source.name, path, f"the file {file}", "something else by that name")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob(f".{file}.*.part"):  # left by a download that was killed
            stale.unlink()
    except OSError as error:  # a file by the folder's name, no permission, a read-only disk
        raise ConfigError(
            "task.data_dir",
            NO_VALUE,  # the path in full: a long value would be shown cut
            f"{folder.parent} cannot hold the downloads ({error.strerror or first_line(error)})",
            "a folder gradexp can write to",
        ) from None
    failures = [_download(source, file, mirror, path) for mirror in source.mirrors]
    if path.is_file():
        return path
    raise ConfigError(
        "task",
        source.name,
        f"{file} is not in {folder} and could not be downloaded ({'; '.join(f for f in failures if f)})",
        "the published file put there by hand, or task.data_dir (or $GRADEXP_DATA) set to a folder with it",
    )


def _download(source: Source, file: str, mirror: str, path: Path) -> str | None:
    """Download from one mirror; None once the file is in place, else why not. Skipped (None)
    when an earlier mirror already succeeded. The first Ctrl-C ends it between two chunks."""
    if path.is_file():
        return None
    url, partial = mirror + file, path.with_name(f".{file}.{os.getpid()}.part")
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, open(partial, "wb") as out:
            size = response.headers.get("Content-Length")
            shown = f" ({_megabytes(int(size))})" if size and size.isdigit() else ""
            print(f"gradexp: downloading {url}{shown} into {path.parent}", file=sys.stderr, flush=True)
            while block := response.read(CHUNK_BYTES):
                out.write(block)
                check_stop()
        found = md5(partial)
        if found != source.files[file]:
            return f"{url} has MD5 {found}, not the published {source.files[file]}"
        partial.replace(path)
        return None
    except (OSError, http.client.HTTPException) as error:  # URLError, timeouts, refusals, a full disk
        return f"{url}: {getattr(error, 'reason', None) or first_line(error)}"
    finally:
        partial.unlink(missing_ok=True)


def md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def read_idx(path: Path) -> Tensor:
    """A gzipped idx file of unsigned bytes as a uint8 tensor of its dimensions."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08 or data[3] == 0:
        raise ValueError(f"{path.name} is no idx file of unsigned bytes (header {data[:4].hex() or 'empty'})")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    start, count = 4 + 4 * ndim, math.prod(dims)
    if len(data) != start + count:
        raise ValueError(f"{path.name} holds {len(data)} bytes, not {start + count} for dimensions {dims}")
    if count == 0:  # frombuffer refuses an empty buffer
        return torch.zeros(dims, dtype=torch.uint8)
    return torch.frombuffer(bytearray(data[start:]), dtype=torch.uint8).reshape(dims)


def read_mnist(paths: dict[str, Path]) -> Splits:
    """MNIST's (and Fashion-MNIST's) four idx files: images (n, 28, 28), labels (n,)."""
    x_train, y_train, x_test, y_test = (read_idx(paths[file]) for file in MNIST_FILES)
    for images, labels in ((x_train, y_train), (x_test, y_test)):
        if images.dim() != 3 or labels.dim() != 1:
            raise ValueError(f"images of {images.dim()} dimensions and labels of {labels.dim()}, not 3 and 1")
    return x_train.unsqueeze(1), y_train.long(), x_test.unsqueeze(1), y_test.long()


class _ArraysOnly(pickle.Unpickler):
    """Builds what CIFAR-10's pickles hold (dicts, lists, numpy arrays of bytes) and refuses every
    other global a pickle may name, any of which could run code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # bytes pickled at protocol 2 by Python 3
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"a pickle that names {module}.{name}, not a CIFAR-10 batch")
        return super().find_class(module, name)


def read_cifar10(paths: dict[str, Path]) -> Splits:
    """CIFAR-10's python archive: data_batch_1..5 (training) and test_batch."""
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    batches = {}
    with tarfile.open(paths[CIFAR10_ARCHIVE], "r:gz") as tar:
        for member in tar.getmembers():
            if member.isfile() and Path(member.name).name in names:
                batches[Path(member.name).name] = _ArraysOnly(
                    tar.extractfile(member), encoding="bytes"
                ).load()
    missing = [n for n in names if n not in batches]
    if missing:
        raise ValueError(f"no {', '.join(missing)} in the archive")

    def split(keys: list[str]) -> tuple[Tensor, Tensor]:
        rows = b"".join(bytes(memoryview(batches[k][b"data"])) for k in keys)
        labels = [int(label) for k in keys for label in batches[k][b"labels"]]
        if len(rows) != 3072 * len(labels):
            raise ValueError(f"{len(rows)} bytes of images for {len(labels)} labels, not 3072 each")
        x = (
            torch.frombuffer(bytearray(rows), dtype=torch.uint8)
            if rows
            else torch.zeros(0, dtype=torch.uint8)
        )
        return x.reshape(-1, 3, 32, 32), torch.tensor(labels, dtype=torch.long)

    return (*split(names[:5]), *split(names[5:]))


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
            read_mnist,
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
            read_mnist,
        ),
        Source(
            "cifar10",
            {CIFAR10_ARCHIVE: "c58f30108f718f92721af3b95e74349a"},
            ("https://www.cs.toronto.edu/~kriz/",),
            (3, 32, 32),
            50000,
            10000,
            read_cifar10,
        ),
    )
}


def _megabytes(count: int) -> str:
    return f"{count / 2**20:.0f} MB" if count >= 10 * 2**20 else f"{count / 2**20:.2g} MB"


def _unreadable(name: str, where: Path, expected: str, found: object) -> ConfigError:
    return ConfigError(
        "task",
        name,
        f"{where} does not read as {expected} ({found})",
        "the published files (delete them to download them again)",
    )
