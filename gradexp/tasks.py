"""The tasks: synthetic ones, generated from the seed and never downloaded, and three published
datasets (MNIST, Fashion-MNIST, CIFAR-10, see `datasets`), each with a held-out split.

The data is small enough to live on the training device, so a batch is one index into a tensor
and the input pipeline costs nothing next to the gradients being studied; task=custom's datasets
may instead stream from wherever they are (`streaming`, trainer.workers).
"""

import dataclasses
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from gradexp import custom_data, datasets
from gradexp.config.errors import ConfigError
from gradexp.config.schema import TaskConfig
from gradexp.streaming import StreamedData

MAX_CONTEXTS = 2**20  # tokens: vocab ** order, the rows of the source's transition table


@dataclass
class Task:
    x_train: Tensor  # the data; streamed data's first examples only, to build the model on
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    d_out: int
    classification: bool  # cross-entropy and accuracy; otherwise mean squared error
    vocab: int | None = None  # token ids in [0, vocab) as input, a prediction at every position
    loss_floor: float | None = None  # the least expected loss any model can reach, where known
    streamed: StreamedData | None = None  # the datasets, when they stream (trainer.workers)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def n_train(self) -> int:
        return len(self.streamed.train) if self.streamed else self.x_train.shape[0]

    @property
    def n_val(self) -> int:
        return len(self.streamed.val) if self.streamed else self.x_val.shape[0]

    def chunks(self, split: str, n: int, size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """The first `n` examples of `split` ("train" or "val"), `size` at a time, on the
        task's device."""
        if self.streamed:
            return self.streamed.chunks(split, n, size, self.x_train.device)
        x, y = getattr(self, f"x_{split}")[:n], getattr(self, f"y_{split}")[:n]
        return zip(x.split(size), y.split(size))

    def to(self, device: torch.device) -> "Task":
        moved = {k: getattr(self, k).to(device) for k in ("x_train", "y_train", "x_val", "y_val")}
        return dataclasses.replace(self, **moved)


def blobs(cfg: TaskConfig, g: torch.Generator) -> Task:
    """A Gaussian mixture: class k is N(c_k, I) with centres c_k ~ N(0, separation^2 / d_in),
    so centres lie about `separation` standard deviations apart. Classes are balanced."""
    centres = torch.randn(cfg.n_classes, cfg.d_in, generator=g) * cfg.separation / math.sqrt(cfg.d_in)

    def sample(n: int) -> tuple[Tensor, Tensor]:
        y = torch.arange(n) % cfg.n_classes
        y = y[torch.randperm(n, generator=g)]
        return centres[y] + torch.randn(n, cfg.d_in, generator=g), y

    return Task(*sample(cfg.n_train), *sample(cfg.n_val), d_out=cfg.n_classes, classification=True)


def teacher(cfg: TaskConfig, g: torch.Generator) -> Task:
    """y = A tanh(B x) / s + noise, x ~ N(0, I): a fixed random one-hidden-layer teacher, its
    outputs scaled by s (their std over both splits) so the targets have unit variance."""
    b = torch.randn(cfg.d_in, cfg.teacher_width, generator=g) / math.sqrt(cfg.d_in)
    a = torch.randn(cfg.teacher_width, cfg.d_out, generator=g) / math.sqrt(cfg.teacher_width)
    x = torch.randn(cfg.n_train + cfg.n_val, cfg.d_in, generator=g)
    clean = torch.tanh(x @ b) @ a
    y = clean / clean.std() + cfg.noise * torch.randn(clean.shape, generator=g)
    n = cfg.n_train
    return Task(x[:n], y[:n], x[n:], y[n:], d_out=cfg.d_out, classification=False)


def adding(cfg: TaskConfig, g: torch.Generator) -> Task:
    """The adding problem (Hochreiter & Schmidhuber 1997). Input (seq_len, 2): a value in
    U[0, 1] and a marker; exactly one marker in each half of the sequence. Target: the sum of the
    two marked values, whose variance is 2 * 1/12 = 1/6. Solving it means carrying information
    across seq_len / 2 steps, which a vanilla RNN's vanishing gradient prevents."""

    def sample(n: int) -> tuple[Tensor, Tensor]:
        half = cfg.seq_len // 2
        values = torch.rand(n, cfg.seq_len, generator=g)
        first = torch.randint(0, half, (n,), generator=g)
        second = torch.randint(half, cfg.seq_len, (n,), generator=g)
        markers = torch.zeros(n, cfg.seq_len)
        rows = torch.arange(n)
        markers[rows, first] = 1.0
        markers[rows, second] = 1.0
        target = values[rows, first] + values[rows, second]
        return torch.stack([values, markers], dim=-1), target.unsqueeze(-1)

    return Task(*sample(cfg.n_train), *sample(cfg.n_val), d_out=1, classification=False)


def images(cfg: TaskConfig, g: torch.Generator) -> Task:
    """Small images (channels x size x size), one smooth random pattern per class: each example
    is its class's pattern moved by up to `shift` pixels each way (wrapping round), plus pixel
    noise of std `noise`. Where a pixel sits matters less than the shapes around it, which is
    what convolutions are built for; an MLP reads the same images flat."""
    coarse = torch.randn(cfg.n_classes, cfg.channels, 4, 4, generator=g)
    patterns = F.interpolate(coarse, size=(cfg.size, cfg.size), mode="bicubic", align_corners=False)
    patterns = patterns / patterns.flatten(1).std(dim=1).view(-1, 1, 1, 1)  # unit std per class

    def sample(n: int) -> tuple[Tensor, Tensor]:
        y = torch.arange(n) % cfg.n_classes
        y = y[torch.randperm(n, generator=g)]
        moves = torch.randint(-cfg.shift, cfg.shift + 1, (n, 2), generator=g)
        x = torch.stack([patterns[c].roll(tuple(m.tolist()), dims=(1, 2)) for c, m in zip(y, moves)])
        return x + cfg.noise * torch.randn(x.shape, generator=g), y

    return Task(*sample(cfg.n_train), *sample(cfg.n_val), d_out=cfg.n_classes, classification=True)


def tokens(cfg: TaskConfig, g: torch.Generator) -> Task:
    """Next-token prediction on sequences from a random Markov source of order `order` over
    `vocab` tokens: each context of `order` previous tokens has its own next-token distribution,
    softmax(sharpness * N(0, I)). A sequence's first `order` tokens are uniform. The input is a
    sequence of seq_len tokens, the target the same sequence one token on."""
    table = source_table(cfg, g)
    contexts = cfg.vocab**cfg.order

    def sample(n: int) -> tuple[Tensor, Tensor]:
        seq = torch.empty(n, cfg.seq_len + 1, dtype=torch.long)
        seq[:, : cfg.order] = torch.randint(0, cfg.vocab, (n, cfg.order), generator=g)
        context = seq[:, : cfg.order] @ (cfg.vocab ** torch.arange(cfg.order - 1, -1, -1))
        for t in range(cfg.order, cfg.seq_len + 1):
            seq[:, t] = torch.multinomial(table[context], 1, generator=g).squeeze(1)
            context = context * cfg.vocab % contexts + seq[:, t]
        return seq[:, :-1], seq[:, 1:]

    return Task(
        *sample(cfg.n_train),
        *sample(cfg.n_val),
        d_out=cfg.vocab,
        classification=True,
        vocab=cfg.vocab,
        loss_floor=conditional_entropy(table, cfg.vocab, cfg.order, cfg.seq_len),
    )


def source_table(cfg: TaskConfig, g: torch.Generator) -> Tensor:
    """The source's next-token probabilities: a row per context, the context
    (x_{t-order}, ..., x_{t-1}) read as a base-vocab number."""
    logits = cfg.sharpness * torch.randn(cfg.vocab**cfg.order, cfg.vocab, generator=g, dtype=torch.float64)
    return logits.softmax(dim=1)


def conditional_entropy(table: Tensor, vocab: int, order: int, seq_len: int) -> float:
    """The least expected cross-entropy (nats per token) of any predictor of the targets: the mean
    over the predicted tokens x_1 .. x_seq_len of H(x_t | x_0 .. x_{t-1}). A token with fewer than
    `order` tokens before it is uniform (log vocab); after that, the entropy of the next-token
    distribution averaged over the context's exact distribution at that position, which starts
    uniform and is carried forward through the table."""
    table = table.double()
    row_entropy = -(table * table.clamp_min(1e-300).log()).sum(dim=1)
    context = torch.full((vocab**order,), vocab ** (-order), dtype=torch.float64)
    total = 0.0
    for t in range(1, seq_len + 1):
        if t < order:
            total += math.log(vocab)
            continue
        total += float(context @ row_entropy)
        joint = context[:, None] * table  # (context, next token)
        context = joint.reshape(vocab, -1, vocab).sum(dim=0).reshape(-1)  # drop the oldest token
    return total / seq_len


def published(cfg: TaskConfig, g: torch.Generator) -> Task:
    """MNIST, Fashion-MNIST or CIFAR-10 (`datasets`): the training split and the test split as
    the validation split, each cut to n_train and n_val examples drawn by the seed where the
    split has more. Pixels are standardized per channel with the whole training split's mean
    and std, so a layer's input has the unit scale that initializations assume."""
    x_train, y_train, x_test, y_test = datasets.load(cfg.name, cfg.data_dir)
    for key, wanted, held in (("n_train", cfg.n_train, len(y_train)), ("n_val", cfg.n_val, len(y_test))):
        if wanted > held:  # the published files hold every example the config allows; a subset may not
            where = datasets.data_dir(cfg.data_dir) / cfg.name
            raise ConfigError(
                f"task.{key}", wanted, f"the files in {where} hold {held}", f"an integer <= {held}"
            )
    train = torch.randperm(len(y_train), generator=g)[: cfg.n_train]
    val = torch.randperm(len(y_test), generator=g)[: cfg.n_val]
    mean, std = _channel_mean_std(x_train)
    shape = (1, -1) + (1,) * (x_train.dim() - 2)

    def standardized(x: Tensor) -> Tensor:
        return x.float().sub_(mean.view(shape)).div_(std.view(shape))  # in place: one float copy

    return Task(
        standardized(x_train[train]),
        y_train[train],
        standardized(x_test[val]),
        y_test[val],
        d_out=datasets.SOURCES[cfg.name].classes,
        classification=True,
    )


def _channel_mean_std(images: Tensor) -> tuple[Tensor, Tensor]:
    """Each channel's mean and std over a split of uint8 images, exact: from the count of each of
    the 256 values (no float copy of the split, 1.2 GB in float64 for CIFAR-10)."""
    values = torch.arange(256, dtype=torch.float64)
    means, stds = [], []
    for channel in images.unbind(dim=1):
        counts = torch.bincount(channel.flatten(), minlength=256).double()
        mean = (values * counts).sum() / counts.sum()
        means.append(mean)
        stds.append(((values - mean).square() * counts).sum().div(counts.sum() - 1).sqrt().clamp_min(1e-12))
    return torch.stack(means).float(), torch.stack(stds).float()


def custom(cfg: TaskConfig, g: torch.Generator, workers: int | None = None) -> Task:
    """The user's own data (`custom_data`), from the function task._target_ names; streamed
    through a DataLoader when `workers` (trainer.workers) is set."""
    x_train, y_train, x_val, y_val, d_out, streamed = custom_data.load(cfg, g.initial_seed(), workers)
    classification = cfg.loss == "cross_entropy"
    return Task(x_train, y_train, x_val, y_val, d_out=d_out, classification=classification, streamed=streamed)


GENERATED = (blobs, teacher, adding, images, tokens)  # from the seed, never downloaded
TASKS: dict[str, Callable[[TaskConfig, torch.Generator], Task]] = {
    f.__name__: f for f in (*GENERATED, custom)
} | {name: published for name in datasets.SOURCES}
SYNTHETIC = tuple(f.__name__ for f in GENERATED)
IMAGES = ("images", *datasets.SOURCES)  # the tasks whose examples are images (channels, height, width)


def data_shape(cfg: TaskConfig) -> tuple[tuple[int, ...], int] | None:
    """(one example's input shape, the number of outputs), from the config alone: what the
    model is built for, and what the memory check sizes before anything is generated. None for
    task=custom, whose shapes are known once its function has run."""
    if cfg.name == "custom":
        return None
    if cfg.name == "adding":
        return (cfg.seq_len, 2), 1
    if cfg.name == "images":
        return (cfg.channels, cfg.size, cfg.size), cfg.n_classes
    if cfg.name == "tokens":
        return (cfg.seq_len,), cfg.vocab
    if cfg.name in datasets.SOURCES:
        return datasets.SOURCES[cfg.name].shape, datasets.SOURCES[cfg.name].classes
    return (cfg.d_in,), cfg.n_classes if cfg.name == "blobs" else cfg.d_out


def build_task(cfg: TaskConfig, seed: int, workers: int | None = None) -> Task:
    """Generate the task on the CPU from its own generator, so the data is the same on every
    device and does not depend on how much the model's initialization drew from the global RNG.
    `workers` (trainer.workers, task=custom only) streams the data instead of reading it in."""
    g = torch.Generator().manual_seed(seed)
    return custom(cfg, g, workers) if cfg.name == "custom" else TASKS[cfg.name](cfg, g)
