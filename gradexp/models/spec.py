"""A kind of network, registered once as a spec (after torchtitan's train specs): how to build it
from its config, how to check and size its keys, how to describe it. The engine, the recorders
and the reports read the spec and the network's layers, never "is this an MLP?".

Adding a built-in model is one module in this package (its config dataclass, its nn.Module and
a `register(ModelSpec(...))` line) and one YAML file in configs/model/.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import Tensor, nn


@dataclass(frozen=True)
class ModelSpec:
    name: str  # the choice in configs/model/
    config: type | None  # its keys' dataclass; None: `typed` reads the node itself
    build: Callable  # (RunConfig, Task) -> nn.Module, built, not yet initialized
    describe: Callable  # (the config's model group, the activation and norm groups) -> str
    check: Callable = lambda c: None  # (RunConfig) -> None: ranges and choices of its own keys
    size: Callable | None = None  # (RunConfig, input_shape, d_out) -> Size, without building
    init_blocks: Callable | None = None  # (model) -> what an initializer treats as one matrix
    after_init: Callable = lambda model, c: None  # (model, RunConfig): its own extra initialization
    typed: Callable | None = None  # (DictConfig node) -> its typed config, where `config` is None
    groups: tuple[str, ...] = ()  # the config groups it reads besides model (activation, norm)
    # where it reads no activation group: (what sets its nonlinearity, what to use instead)
    nonlinearity: tuple[str, str] = ("its activations are its own", "no activation=... with this model")
    predict: Callable | None = None  # (RunConfig, model) -> the mean-field prediction's summary keys
    no_theory: str = "it describes gradexp's plain MLP; read the measured signals"  # where predict is None
    depth_axis: bool = True  # its layers, input to output, are a depth: the sweep's depth figure
    tasks: tuple[str, ...] | None = None  # the tasks whose data it reads; None: any


@dataclass(frozen=True)
class Size:
    """What the memory check needs: exact counts, as Python integers, never a built model."""

    parameters: int
    units: int  # activations per example, over the network
    keys: tuple[str, ...] = field(default=())  # the model keys that make it large


MODELS: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    MODELS[spec.name] = spec
    return spec


def default_biases(model: nn.Module) -> list[Tensor]:
    """Every bias outside a normalization layer (whose shift is no bias to initialize)."""
    norms = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)
    in_norms = {id(p) for m in model.modules() if isinstance(m, norms) for p in m.parameters()}
    return [
        p
        for name, p in model.named_parameters()
        if "bias" in name.split(".")[-1] and id(p) not in in_norms and p.requires_grad
    ]
