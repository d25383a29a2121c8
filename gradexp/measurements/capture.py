"""The hooks of a diagnostic step, installed once for all the measurements that need them (what
Cockpit calls extensions) and only for that step's first forward and backward pass: once the
first gradient reaches a hook, later forward passes (micro-batches) are not watched, nor are
passes without gradients (a loop's evaluation while the hooks are open).

- layers: the norm of the gradient at each layer's output y, ||dL/dy|| (one per output a
  layer's modules gave: a module called twice, or a weight two modules share, has several);
- activations: each activation site's output, and its input where a measurement reads it
  (a saturating unit's, say; a ReLU's dead units are read off its output);
- blocks: each block's output (the residual stream at its boundary) and the norm of the
  gradient there.

The forward hooks keep references, and the measurements compute on them in a few batched
operations; a tensor no measurement reads is not kept. A gradient is reduced to its norm in its
hook, where it is produced (and in cache). Either kept to the end of the step would add to its
peak memory: every layer's dL/dy, every ReLU's input (which the bare step frees in the forward
pass). On the CPU, glibc would then hand that memory back to the system after the step and
fault it in again at the next one. When both were kept, overhead.py's residual tower took about
800 page faults a step and a third of a millisecond (about what its norms in the hooks cost
now); its ResNet took 7600 faults, and a diagnostic step's extra time went from 19.5 ms to 8 to
10 ms of a 38 ms step once neither was.
"""

from collections.abc import Collection, Iterator
from contextlib import contextmanager
from functools import partial

import torch
from torch import Tensor, nn

from gradexp.network import Network
from gradexp.scaled_norms import norm_now


class Capture:
    def __init__(self, network: Network, needs: set[str], inputs_read: Collection[int] = ()):
        """`inputs_read`: the activation sites whose inputs a measurement reads."""
        self.network, self.needs, self._inputs_read = network, needs, frozenset(inputs_read)
        self.layer_grad_norms: list[list[Tensor]] = []  # per layer, every ||dL/dy|| (0-dim)
        self.act_inputs: list[Tensor | None] = []  # per activation site (those in inputs_read)
        self.act_outputs: list[Tensor | None] = []
        self.block_outputs: list[Tensor | None] = []
        self.block_grad_norms: list[Tensor | None] = []
        self._site_of = {(id(s.module), s.call): i for i, s in enumerate(network.activations)}
        self._layer_read_by = _layers_read_by_sites(network) if "activations" in needs else {}
        # activation modules with a site whose input is read: in place, it is copied before it runs
        self._modules_read = {
            id(s.module) for i, s in enumerate(network.activations) if i in self._inputs_read
        }
        self._calls: dict[int, int] = {}  # activation module -> its calls so far in this pass
        self._copies: dict[int, Tensor] = {}  # an in-place activation's input, before it runs
        self._sealed = False

    @contextmanager
    def hooks(self) -> Iterator[None]:
        n = self.network
        self.clear()
        self._calls = {}
        self._sealed = False  # a gradient has come back: the watched forward pass is over
        handles = []
        if "layers" in self.needs:
            read_by_sites = set(self._layer_read_by.values())
            for i, layer in enumerate(n.layers):
                if i in read_by_sites:
                    continue  # its output is the input of an activation: taken from there
                for module in layer.modules:
                    handles.append(module.register_forward_hook(partial(self._on_layer, i)))
        if "activations" in self.needs:
            for module in {id(s.module): s.module for s in n.activations}.values():
                if getattr(module, "inplace", False) and id(module) in self._modules_read:
                    handles.append(module.register_forward_pre_hook(self._before_in_place))
                handles.append(module.register_forward_hook(self._on_activation))
        if "blocks" in self.needs:
            for i, block in enumerate(n.blocks):
                handles.append(block.module.register_forward_hook(partial(self._on_block, i)))
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def clear(self) -> None:
        """Drop the references the last diagnostic step's hooks kept."""
        n = self.network
        self.layer_grad_norms = [[] for _ in n.layers]
        self.act_inputs, self.act_outputs = [None] * len(n.activations), [None] * len(n.activations)
        self.block_outputs, self.block_grad_norms = [None] * len(n.blocks), [None] * len(n.blocks)
        self._copies = {}

    def _watching(self) -> bool:
        return not self._sealed and torch.is_grad_enabled()

    def _layer_grad(self, i: int, grad: Tensor) -> None:
        self._sealed = True
        self.layer_grad_norms[i].append(norm_now(grad))

    def _block_grad(self, i: int, grad: Tensor) -> None:
        self._sealed = True
        self.block_grad_norms[i] = norm_now(grad)

    def _on_layer(self, i: int, module: nn.Module, inputs, y) -> None:
        if isinstance(y, Tensor) and y.requires_grad and self._watching():
            y.register_hook(partial(self._layer_grad, i))

    def _before_in_place(self, module: nn.Module, inputs) -> None:
        if self._watching():
            self._copies[id(module)] = inputs[0].detach().clone()

    def _on_activation(self, module: nn.Module, inputs, output: Tensor) -> None:
        if not self._watching():
            return
        call = self._calls.get(id(module), 0)
        self._calls[id(module)] = call + 1
        site = self._site_of.get((id(module), call))
        if site is not None:
            layer = self._layer_read_by.get(site)
            if layer is not None and "layers" in self.needs and inputs[0].requires_grad:
                inputs[0].register_hook(partial(self._layer_grad, layer))
            given = self._copies.pop(id(module), None)  # its input, copied before it ran in place
            in_place = getattr(module, "inplace", False)  # its output, too, later code may overwrite
            if site in self._inputs_read:
                self.act_inputs[site] = given if in_place else inputs[0].detach()
            self.act_outputs[site] = output.detach().clone() if in_place else output.detach()

    def _on_block(self, i: int, module: nn.Module, inputs, output) -> None:
        y = output if isinstance(output, Tensor) else next((t for t in output if isinstance(t, Tensor)), None)
        if (
            y is None or self.block_outputs[i] is not None or not self._watching()
        ):  # called twice: its first call
            return
        self.block_outputs[i] = y.detach()
        if y.requires_grad:
            y.register_hook(partial(self._block_grad, i))


def _layers_read_by_sites(network: Network) -> dict[int, int]:
    """site -> layer, for each layer whose one module runs once and whose output goes as is into
    one activation (an MLP's z -> phi): its dL/dy is hooked from the activation's input, which
    saves a hook per layer (and each hook costs a few microseconds, at every diagnostic step)."""
    found = {}
    for i, layer in enumerate(network.layers):
        if len(layer.modules) != 1 or layer.calls != 1:
            continue
        readers = [k for k, s in enumerate(network.activations) if s.reads is layer.modules[0]]
        if len(readers) == 1 and not getattr(network.activations[readers[0]].module, "inplace", False):
            found[readers[0]] = i
    return found
