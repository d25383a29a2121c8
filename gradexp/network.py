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
  blocks): the children of a ModuleList or Sequential that are all of one class. A model may name
  its own (`gradexp_blocks()`); the MLP and RNN have none, their layers are their blocks.
"""

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

# Activation modules by what the diagnostics watch for: units whose derivative has collapsed at
# both ends or on the negative side ("saturating"), or units with a zero gradient for x < 0 that
# can die ("rectifier"). Identity is no activation (a linear network has no units to watch).
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
    recurrent: bool = False  # a W_hh: its powers carry the signal through time


@dataclass
class ActivationSite:
    name: str
    module: nn.Module
    call: int  # which call of the module in a forward pass (0: the first)
    family: str | None


@dataclass
class Block:
    name: str
    module: nn.Module
    params: list[nn.Parameter]  # the trainable parameters inside it


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


def position_names(roles: list[str]) -> list[str]:
    """Prefix each role with its position, zero-padded to a fixed width, so names sort input to
    output in TensorBoard and tables, and layer 5 has the same tag in a network of depth 5 as in
    one of depth 50 (sweeps overlay them): ['001_hidden', ..., '012_output']."""
    return [f"{i:03d}_{role}" for i, role in enumerate(roles, start=1)]


def discover(model: nn.Module, example: Tensor) -> Network:
    """Find the layers, activation sites and blocks of `model` by one forward pass on `example`
    (a few inputs), traced in eval mode without gradients and with the random state put back, so
    that tracing changes nothing the training will see."""
    weights = _weights(model)
    calls = _trace(model, example, {id(m) for m, _, _ in weights}, _activation_modules(model))
    order: dict[int, int] = {}  # each weight-holding module's first call
    for i, (kind, module) in enumerate(calls):
        if kind == "module":
            order.setdefault(id(module), i)
    layers = _layers(model, weights, order)
    activations = _activation_sites(calls, layers)
    blocks = _blocks(model)
    in_layers = {id(layer.weight) for layer in layers}
    rest = [(n, p) for n, p in model.named_parameters() if p.requires_grad and id(p) not in in_layers]
    return Network(
        model,
        layers,
        activations,
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
    return {id(m) for m in model.modules() if type(m) in ACTIVATION_FAMILIES}


def _trace(
    model: nn.Module, example: Tensor, watched: set[int], activations: set[int]
) -> list[tuple[str, nn.Module]]:
    """The forward pass's calls, in order: ('module', m) when a weight-holding module starts,
    ('activation', m) when an activation module does."""
    calls: list[tuple[str, nn.Module]] = []
    handles = []
    for module in model.modules():
        if id(module) in watched:
            handles.append(module.register_forward_pre_hook(lambda m, _: calls.append(("module", m))))
        if id(module) in activations:
            handles.append(module.register_forward_pre_hook(lambda m, _: calls.append(("activation", m))))
    modes = {m: m.training for m in model.modules()}
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            model.eval()
            model(example)
    finally:
        for handle in handles:
            handle.remove()
        for m, training in modes.items():
            m.train(training)
    return calls


def _layers(model: nn.Module, weights, order: dict[int, int]) -> list[Layer]:
    """One layer per distinct weight, ordered by the first call of a module that holds it."""
    paths = {id(m): path for path, m in model.named_modules(remove_duplicate=False)}
    by_weight: dict[int, list] = {}
    for module, name, weight in weights:
        by_weight.setdefault(id(weight), []).append((module, name, weight))
    unused = len(order)
    entries = []
    for position, holders in enumerate(by_weight.values()):
        first_call = min(order.get(id(m), unused) for m, _, _ in holders)
        entries.append(((first_call, position), holders))
    entries.sort(key=lambda entry: entry[0])
    named = _own_names(model)
    layers = []
    for i, (_, holders) in enumerate(entries, start=1):
        module, name, weight = min(holders, key=lambda h: order.get(id(h[0]), unused))
        own = _weights_of(module)
        path = paths[id(module)] if own == 1 and name == "weight" else f"{paths[id(module)]}.{name}"
        path = path.lstrip(".")
        signal_modules = [m for m, _, _ in holders if _weights_of(m) == 1 and not _has_param_children(m)]
        layers.append(
            Layer(
                named.get(id(weight), f"{i:03d}_{path}"),
                weight,
                path,
                signal_modules,
                recurrent=isinstance(module, nn.RNNBase) and name.startswith("weight_hh"),
            )
        )
    if named:
        rank = {name: i for i, name in enumerate(named.values())}
        layers.sort(key=lambda layer: rank.get(layer.name, len(rank)))
    return layers


def _own_names(model: nn.Module) -> dict[int, str]:
    """The model's own layer names (`gradexp_layers()`), by weight; none when it has no such method."""
    method: Callable | None = getattr(model, "gradexp_layers", None)
    return {id(w): name for name, w in method()} if callable(method) else {}


def _weights_of(module: nn.Module) -> int:
    return sum(1 for p in module.parameters(recurse=False) if p.requires_grad and p.dim() >= 2)


def _has_param_children(module: nn.Module) -> bool:
    return any(True for child in module.children() for _ in child.parameters())


def _activation_sites(calls, layers: list[Layer]) -> list[ActivationSite]:
    """Each activation call, named after the layer that started last before it (a second site
    after the same layer gets `.2`); an activation before any layer is named by its position."""
    layer_of = {id(m): layer.name for layer in layers for m in layer.modules}
    recent, sites, seen_calls, used = None, [], Counter(), Counter()
    for kind, module in calls:
        if kind == "module":
            recent = layer_of.get(id(module), recent)
            continue
        base = recent or f"{len(sites) + 1:03d}_input"
        used[base] += 1
        name = base if used[base] == 1 else f"{base}.{used[base]}"
        family = ACTIVATION_FAMILIES.get(type(module))
        sites.append(ActivationSite(name, module, seen_calls[id(module)], family))
        seen_calls[id(module)] += 1
    return sites


def _blocks(model: nn.Module) -> list[Block]:
    """The model's own blocks (`gradexp_blocks()`), else the repeated composite children of every
    outermost ModuleList or Sequential whose children share one class, named by position and path."""
    method: Callable | None = getattr(model, "gradexp_blocks", None)
    found = method() if callable(method) else _repeated(model, "")
    return [
        Block(
            name if callable(method) else f"{i:03d}_{name}", m, [p for p in m.parameters() if p.requires_grad]
        )
        for i, (name, m) in enumerate(found, start=1)
    ]


def _repeated(module: nn.Module, path: str) -> list[tuple[str, nn.Module]]:
    children = list(module.named_children())
    composite = [c for _, c in children if _has_param_children(c) or _weights_of(c) > 1]
    if (
        isinstance(module, CONTAINERS)
        and len(children) >= 2
        and len(composite) == len(children)
        and len({type(c) for _, c in children}) == 1
    ):
        return [(f"{path}{name}", child) for name, child in children]
    return [found for name, child in children for found in _repeated(child, f"{path}{name}.")]
