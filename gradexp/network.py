"""What gradexp measures in any `nn.Module`: its layers, activation sites and blocks, found from
the module tree and one traced forward pass, so that no recorder ever asks which network it is.

- A **layer** is a trainable weight matrix or kernel (ndim >= 2: Linear, Conv, Embedding,
  attention projections, each recurrent layer's W_ih and W_hh). Layers are ordered by the forward
  pass (the first call of a module that uses the weight), not by registration; a weight shared by
  two modules (tied embeddings) is one layer; a frozen weight is no layer. Its name is its
  position and module path (`003_blocks.0.attn.qkv`), unless the model names its own
  (`gradexp_layers()`, as the MLP and RNN do: `003_hidden`).
- An **activation site** is one call of an activation module (a ReLU module called twice is two
  sites), named after the layer that ran last before it: the MLP's `003_hidden` activation
  follows the `003_hidden` linear map. Activation modules are those of a known class
  (ACTIVATION_FAMILIES), unless the model names its own (`gradexp_activations()`: the MLP's
  include the identity of a deep linear network, which is no activation anywhere else).
- A **block** is one of the repeated composite modules of a trunk (Transformer blocks, ResNet
  blocks): the children of a ModuleList or Sequential that are all of one class, in forward
  order. A model may name its own (`gradexp_blocks()`); the MLP and RNN have none, their layers
  are their blocks.

The trace runs the model as it will train (train mode: no inference fast path hides a module),
without gradients, with every random state and every buffer (BatchNorm's running statistics)
put back afterwards, so that it changes nothing the training will see.
"""

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

# Activation modules by what the diagnostics watch for: units whose derivative has collapsed at
# both ends or on the negative side ("saturating"), or units with a zero gradient for x < 0 that
# can die ("rectifier"); a subclass is watched as its base. Identity is no activation here (a
# linear network has no units to watch), unless a model names it (the MLP's identity).
ACTIVATION_FAMILIES: dict[type, str | None] = {
    nn.Sigmoid: "saturating",
    nn.Tanh: "saturating",
    nn.Softsign: "saturating",
    nn.Hardtanh: "saturating",
    nn.Hardsigmoid: "saturating",
    nn.ELU: "saturating",
    nn.SELU: "saturating",
    nn.CELU: "saturating",
    nn.GELU: "saturating",
    nn.SiLU: "saturating",
    nn.Mish: "saturating",
    nn.Softplus: "saturating",
    nn.Hardswish: "saturating",
    nn.ReLU: "rectifier",
    nn.ReLU6: "rectifier",
    nn.LeakyReLU: "rectifier",
    nn.PReLU: "rectifier",
    nn.RReLU: "rectifier",
}
CONTAINERS = (nn.ModuleList, nn.Sequential)


@dataclass
class Layer:
    name: str
    weight: nn.Parameter
    path: str  # module path, and the parameter's name where the module holds several weights
    modules: list[nn.Module]  # the modules whose output is this layer's y (empty: no y of its own)
    holders: list[nn.Module] = field(default_factory=list)  # every module that holds the weight
    calls: int = 0  # calls of its modules in a forward pass
    recurrent: bool = False  # a square-blocked W_hh: its powers carry the signal through time


@dataclass
class ActivationSite:
    name: str
    module: nn.Module
    call: int  # which call of the module in a forward pass (0: the first)
    family: str | None
    reads: nn.Module | None = None  # the module whose output is this site's input, as is (z -> phi)


@dataclass
class Block:
    name: str
    module: nn.Module
    params: list[nn.Parameter]  # the trainable parameters inside it
    trunk: str = ""  # the container it repeats in: the verdict reads the longest trunk


@dataclass
class Network:
    """The model and what the recorders measure in it, input to output."""

    model: nn.Module
    layers: list[Layer]
    activations: list[ActivationSite]
    blocks: list[Block]
    params: list[nn.Parameter] = field(default_factory=list)  # every trainable one, layers' first
    param_names: list[str] = field(default_factory=list)  # layer names, then module paths

    @property
    def layer_names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    @property
    def trunk(self) -> list[str]:
        """The blocks of the longest trunk, input to output (encoder and decoder are two)."""
        trunks: dict[str, list[str]] = {}
        for block in self.blocks:
            trunks.setdefault(block.trunk, []).append(block.name)
        return max(trunks.values(), key=len, default=[])


def activation_family(module: nn.Module) -> str | None:
    """The family of an activation module's class or of the nearest base class that has one."""
    for cls in type(module).__mro__:
        if cls in ACTIVATION_FAMILIES:
            return ACTIVATION_FAMILIES[cls]
    return None


def position_names(roles: list[str]) -> list[str]:
    """Prefix each role with its position, zero-padded to a fixed width, so names sort input to
    output in TensorBoard and tables, and layer 5 has the same tag in a network of depth 5 as in
    one of depth 50 (sweeps overlay them): ['001_hidden', ..., '012_output']. Past 999 roles the
    width grows, so that they still sort."""
    width = max(3, len(str(len(roles))))
    return [f"{i:0{width}d}_{role}" for i, role in enumerate(roles, start=1)]


def discover(model: nn.Module, example: Tensor | tuple, kwargs: dict | None = None) -> Network:
    """Find the layers, activation sites and blocks of `model` by one forward pass on `example`
    (a few inputs; a tuple of positional arguments, with `kwargs`, for a model that takes more
    than one), traced so that tracing changes nothing the training will see."""
    args = example if isinstance(example, tuple) else (example,)
    kwargs = kwargs or {}
    tracer = Tracer(model)
    buffers = [(b, b.clone()) for b in model.buffers()]
    tensors = [t for t in (*args, *kwargs.values()) if isinstance(t, Tensor)]
    devices = sorted({t.device.index or 0 for t in tensors if t.device.type == "cuda"})
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            tracer.start()
            model(*args, **kwargs)
    finally:
        tracer.stop()
        with torch.no_grad():
            for buffer, saved in buffers:
                buffer.copy_(saved)
    return tracer.network()


class Tracer:
    """Every module call of forward passes, in order, recorded by hooks on every module between
    `start` and `stop`: ('module', m, None), or for an activation module ('activation', m, the
    module whose output it reads as is, if any). `discover` traces a pass of its own; a user's
    loop that never calls the model itself (a LightningModule's training_step calling its
    submodules) is traced as it trains, with `with_grad_only`: its passes with gradients, up to
    the first backward (its evaluation passes and later micro-batches are not traced)."""

    def __init__(self, model: nn.Module, with_grad_only: bool = False):
        self.model, self.with_grad_only = model, with_grad_only
        self.activations = _activation_modules(model)
        self.calls: list[tuple] = []
        self._outputs: dict[int, tuple[nn.Module, Tensor]] = {}  # a tensor's id -> the module that made it
        self._handles: list = []
        self.recording = True  # until the first backward, with with_grad_only

    def start(self) -> None:
        modules = list(self.model.modules())
        self._handles = [m.register_forward_pre_hook(self._record) for m in modules]
        self._handles += [m.register_forward_hook(self._made) for m in modules]

    def stop(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles, self._outputs = [], {}

    def _watching(self) -> bool:
        return self.recording and not (self.with_grad_only and not torch.is_grad_enabled())

    def _record(self, module: nn.Module, inputs) -> None:
        if not self._watching():
            return
        if id(module) not in self.activations:
            self.calls.append(("module", module, None))
            return
        made = self._outputs.get(id(inputs[0])) if inputs and isinstance(inputs[0], Tensor) else None
        self.calls.append(("activation", module, made[0] if made and made[1] is inputs[0] else None))

    def _made(self, module: nn.Module, inputs, output) -> None:
        if not self._watching() or not isinstance(output, Tensor):
            return
        if _weights_of(module) == 1:
            self._outputs[id(output)] = (module, output)
        if self.with_grad_only and output.requires_grad:  # any output backward reaches ends the pass
            output.register_hook(self._backward_began)

    def _backward_began(self, grad: Tensor) -> None:
        self.recording = False

    def network(self) -> Network:
        """The network, from the calls traced so far."""
        model, calls = self.model, self.calls
        first_call: dict[int, int] = {}
        for i, (_, module, _) in enumerate(calls):
            first_call.setdefault(id(module), i)
        order = _order(model, first_call, len(calls))
        counts = Counter(id(module) for _, module, _ in calls)
        layers = _layers(model, _weights(model), order, first_call, counts)
        sites = _activation_sites(calls, layers, self.activations)
        blocks = sorted(_blocks(model), key=lambda block: order(block.module))
        if not callable(getattr(model, "gradexp_blocks", None)):
            width = max(3, len(str(len(blocks))))
            for i, block in enumerate(blocks, start=1):
                block.name = f"{i:0{width}d}_{block.name}"
        in_layers = {id(layer.weight) for layer in layers}
        rest = [(n, p) for n, p in model.named_parameters() if p.requires_grad and id(p) not in in_layers]
        return Network(
            model,
            layers,
            sites,
            blocks,
            params=[layer.weight for layer in layers] + [p for _, p in rest],
            param_names=[layer.name for layer in layers] + [n for n, _ in rest],
        )


def _weights(model: nn.Module) -> list[tuple[nn.Module, str, nn.Parameter]]:
    """(module, parameter name, weight) for every trainable weight of ndim >= 2, by the module
    that holds it directly; a weight held by two modules appears once per module."""
    found = []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if p.requires_grad and p.dim() >= 2:
                found.append((module, name, p))
    return found


def _activation_modules(model: nn.Module) -> set[int]:
    method: Callable | None = getattr(model, "gradexp_activations", None)
    if callable(method):
        return {id(m) for m in method()}
    return {id(m) for m in model.modules() if activation_family(m) is not None}


def _order(model: nn.Module, first_call: dict[int, int], never: int) -> Callable[[nn.Module], int]:
    """A module's place in the forward pass: its first call, or, for a module whose forward never
    runs (MultiheadAttention passes out_proj's weight to a function), its nearest called
    ancestor's; `never` for a module outside the forward pass."""
    parent = {id(child): m for m in model.modules() for child in m.children()}

    def place(module: nn.Module) -> int:
        while module is not None:
            if id(module) in first_call:
                return first_call[id(module)]
            module = parent.get(id(module))
        return never

    return place


def _layers(model: nn.Module, weights, order, first_call: dict[int, int], counts: Counter) -> list[Layer]:
    """One layer per distinct weight, ordered by the first call of a module that holds it."""
    paths = {id(m): path for path, m in model.named_modules(remove_duplicate=False)}
    by_weight: dict[int, list] = {}
    for module, name, weight in weights:
        by_weight.setdefault(id(weight), []).append((module, name, weight))
    entries = sorted(enumerate(by_weight.values()), key=lambda e: (min(order(m) for m, _, _ in e[1]), e[0]))
    named = _own_names(model)
    width = max(3, len(str(len(entries))))
    layers = []
    for i, (_, holders) in enumerate(entries, start=1):
        module, name, weight = min(holders, key=lambda h: order(h[0]))
        path = (
            paths[id(module)]
            if _weights_of(module) == 1 and name == "weight"
            else f"{paths[id(module)]}.{name}"
        )
        path = path.strip(".") or type(module).__name__.lower()
        layers.append(
            Layer(
                named.get(id(weight), f"{i:0{width}d}_{path}"),
                weight,
                path,
                modules=[m for m, _, _ in holders if _has_an_output(m, first_call)],
                calls=sum(counts[id(m)] for m, _, _ in holders),
                holders=[m for m, _, _ in holders],
                recurrent=isinstance(module, nn.RNNBase)
                and name.startswith("weight_hh")
                and weight.shape[0] % weight.shape[1] == 0,
            )
        )
    if named:
        rank = {name: i for i, name in enumerate(named.values())}
        layers.sort(key=lambda layer: rank.get(layer.name, len(rank)))
    return layers


def _has_an_output(module: nn.Module, first_call: dict[int, int]) -> bool:
    """The module's output is its weight's y: it holds that one weight and nothing with
    parameters of its own below it, and its forward runs (its hooks would fire)."""
    return _weights_of(module) == 1 and not _has_param_children(module) and id(module) in first_call


def _own_names(model: nn.Module) -> dict[int, str]:
    """The model's own layer names (`gradexp_layers()`), by weight; none when it has no such method."""
    method: Callable | None = getattr(model, "gradexp_layers", None)
    return {id(w): name for name, w in method()} if callable(method) else {}


def _weights_of(module: nn.Module) -> int:
    return sum(1 for p in module.parameters(recurse=False) if p.requires_grad and p.dim() >= 2)


def _has_param_children(module: nn.Module) -> bool:
    return any(True for child in module.children() for _ in child.parameters())


def _activation_sites(calls, layers: list[Layer], activations: set[int]) -> list[ActivationSite]:
    """Each activation call, named after the layer that started last before it (a second site
    after the same layer gets `.2`); an activation before any layer is named by its position."""
    layer_of = {id(m): layer.name for layer in layers for m in layer.holders}
    recent, sites, seen_calls, used = None, [], Counter(), Counter()
    for kind, module, reads in calls:
        if kind == "module":
            recent = layer_of.get(id(module), recent)
            continue
        base = recent or f"{len(sites) + 1:03d}_input"
        used[base] += 1
        name = base if used[base] == 1 else f"{base}.{used[base]}"
        family = activation_family(module)
        sites.append(ActivationSite(name, module, seen_calls[id(module)], family, reads))
        seen_calls[id(module)] += 1
    return sites


def _blocks(model: nn.Module) -> list[Block]:
    """The model's own blocks (`gradexp_blocks()`), else the repeated composite children of every
    outermost ModuleList or Sequential whose children share one class, by module path."""
    method: Callable | None = getattr(model, "gradexp_blocks", None)
    found = [(name, m, "") for name, m in method()] if callable(method) else _repeated(model, "")
    return [Block(name, m, [p for p in m.parameters() if p.requires_grad], trunk) for name, m, trunk in found]


def _repeated(module: nn.Module, path: str) -> list[tuple[str, nn.Module, str]]:
    children = list(module.named_children())
    composite = [c for _, c in children if _has_param_children(c) or _weights_of(c) > 1]
    if (
        isinstance(module, CONTAINERS)
        and len(children) >= 2
        and len(composite) == len(children)
        and len({type(c) for _, c in children}) == 1
    ):
        return [(f"{path}{name}", child, path) for name, child in children]
    return [found for name, child in children for found in _repeated(child, f"{path}{name}.")]
