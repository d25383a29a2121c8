"""Typed schemas for every config group: the YAML files in configs/ are checked against these.

A group's YAML files decide which keys each choice has (Hydra rejects any other key); these
dataclasses decide each key's type. Fields that only some choices use carry a default, so one
schema serves the whole group. Ranges and cross-field rules live in `validate.py`.
"""

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING


@dataclass
class ActivationConfig:
    name: str = MISSING
    negative_slope: float = 0.01  # leaky_relu
    alpha: float = 1.0  # elu


@dataclass
class InitConfig:
    name: str = MISSING
    bias: float | None = 0.0  # null (init=default only): keep PyTorch's biases
    gain: float = 1.0  # xavier_*, orthogonal
    mean: float = 0.0  # normal
    std: float = 0.02  # normal
    low: float = -0.05  # uniform
    high: float = 0.05  # uniform
    value: float = 0.01  # constant
    mode: str = "fan_in"  # kaiming_*
    nonlinearity: str = "relu"  # kaiming_*
    a: float = 0.0  # kaiming_*: negative slope for nonlinearity=leaky_relu


@dataclass
class NormConfig:
    name: str = MISSING


@dataclass
class OptimizerConfig:
    name: str = MISSING
    lr: float = MISSING
    weight_decay: float = 0.0
    momentum: float = 0.0  # momentum, nesterov, rmsprop
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adam, adamw
    eps: float = 1e-8  # adagrad, rmsprop, adam, adamw
    alpha: float = 0.99  # rmsprop
    lr_decay: float = 0.0  # adagrad


@dataclass
class SchedulerConfig:
    name: str = MISSING
    step_size: int = 100  # step
    gamma: float = 0.5  # step, exponential
    t_max: int | None = None  # cosine; null: trainer.steps - warmup_steps
    eta_min: float = 0.0  # cosine
    warmup_steps: int = 0  # every scheduler: a linear ramp from 0 to optimizer.lr, then the schedule


@dataclass
class TaskConfig:
    name: str = MISSING
    n_train: int = 4096
    n_val: int = 1024
    d_in: int = 32  # blobs, teacher
    n_classes: int = 4  # blobs, images
    separation: float = 3.0  # blobs
    d_out: int = 1  # teacher
    teacher_width: int = 64  # teacher
    noise: float = 0.1  # teacher, images
    seq_len: int = 50  # adding, tokens
    channels: int = 3  # images
    size: int = 16  # images: height and width
    shift: int = 2  # images: the most pixels an example is moved from its class's pattern
    vocab: int = 16  # tokens
    order: int = 2  # tokens: how many previous tokens the next one depends on
    sharpness: float = 2.0  # tokens: std of the next-token logits; higher is more predictable
    data_dir: str | None = None  # mnist, fashion_mnist, cifar10: the download cache (datasets.data_dir)
    _target_: str | None = None  # custom: module.callable, the function that returns the data
    loss: str = "cross_entropy"  # custom: cross_entropy (class labels) | mse (real-valued targets)
    outputs: int | None = None  # custom: the model's outputs; null: read from the data


@dataclass
class ClipConfig:
    max_norm: float | None = None
    value: float | None = None


@dataclass
class TrainerConfig:
    steps: int = 500
    batch_size: int = 128
    grad_accum: int = 1
    seed: int = 0
    device: str = "auto"
    log_every: int = 10
    eval_every: int = 100
    clip: ClipConfig = field(default_factory=ClipConfig)
    threads: int | None = None  # torch CPU threads; null: torch's default, shared out under joblib
    workers: int | None = None  # task=custom's datasets: null reads them in; N streams them (DataLoader)
    deterministic: bool = False  # PyTorch's deterministic algorithms (an error for an op without one)
    checkpoint_every: int | None = 1000  # steps between checkpoints (and one when stopped); null: only then
    resume: str | None = None  # a run directory to go on from its checkpoint
    precision: str = "32"  # 32 | bf16 | fp16: the forward pass under torch.autocast in that dtype
    loss_scale: Any = None  # dynamic | none | a number; null: dynamic for fp16, none otherwise


@dataclass
class DiagnosticsConfig:
    every: int | None = 50  # signals every this many steps, and at the first and last; null: off
    histograms_every: int | None = 250  # null: off
    saturation_fraction: float = 0.1  # saturated: phi' below this fraction of its maximum
    figures: bool = True


@dataclass
class ObjectiveConfig:
    metric: str = "final_val_loss"  # what a job returns to a searching sweeper (sweeps/objective.py)


@dataclass
class SweepConfig:
    resume: bool = False  # in an existing sweep directory: keep finished jobs, resume or re-run the rest
    seeds: int = 1  # every configuration over trainer.seed, ..., trainer.seed + seeds - 1
    job_figures: bool = False  # each job draws its figures; else gradexp-report <job> draws them later


@dataclass
class RunConfig:
    """The whole validated configuration of one run, as the builders and the engine read it."""

    model: Any  # the dataclass of the chosen model (gradexp.models.MODELS[model.name].config)
    activation: ActivationConfig
    init: InitConfig
    norm: NormConfig
    optimizer: OptimizerConfig
    scheduler: SchedulerConfig
    task: TaskConfig
    trainer: TrainerConfig
    diagnostics: DiagnosticsConfig
    objective: ObjectiveConfig
    sweep: SweepConfig


GROUP_SCHEMAS = {
    "activation": ActivationConfig,
    "init": InitConfig,
    "norm": NormConfig,
    "optimizer": OptimizerConfig,
    "scheduler": SchedulerConfig,
    "task": TaskConfig,
    "trainer": TrainerConfig,
    "diagnostics": DiagnosticsConfig,
    "objective": ObjectiveConfig,
    "sweep": SweepConfig,
}
