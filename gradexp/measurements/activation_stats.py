"""The forward half of the argument, at every activation site (each call of an activation module):

- act_mean/<site>, act_std/<site>: the mean and std of the activation's output;
- saturation/<site> (sigmoid, tanh, softsign, ELU, GELU...): the share of values where
  phi' < fraction * max phi', which pass (almost) no gradient;
- dead/<site> (the ReLU family): the share of units whose input is <= 0 for every example of
  the batch, which pass no gradient (or only the leak). A unit is one entry of the output past
  the batch dimension (a feature, or a channel at a position).
A site is named after the layer that ran before it: an MLP's `003_hidden` activation follows its
`003_hidden` linear map."""

import copy as pycopy
import math

import torch
from torch import Tensor, nn

from gradexp.diagnostics.theory import max_derivative, where_below
from gradexp.measurements.base import Context, Measurement, Output, Signal, measurement
from gradexp.measurements.reduce import Indices, Rows, Stacker, groups, scatter

UNIT_SIGNALS = {"saturating": "saturation", "rectifier": "dead"}


@measurement
class ActivationStats(Measurement):
    signals = (
        Signal("act_mean", "activation mean per layer", per="activation"),
        Signal(
            "act_std",
            "activation std per layer",
            per="activation",
            columns=("first",),
            heading="act std {step}",
        ),
        Signal(
            "saturation",
            "saturated units (share)",
            per="activation",
            columns=("first", "last"),
            heading="saturated {step}",
        ),
        Signal(
            "dead", "dead units (share)", per="activation", columns=("first", "last"), heading="dead {step}"
        ),
    )
    needs = frozenset({"activations"})
    due_with_histograms = True  # the activation histograms read what it captures
    order = 20

    @staticmethod
    def applies(context: Context) -> str | None:
        return None if context.network.activations else "the network has no activation modules"

    def __init__(self, context: Context):
        super().__init__(context)
        sites = context.network.activations
        self.sites = sites
        self.tags = [f"act_mean/{s.name}" for s in sites] + [f"act_std/{s.name}" for s in sites]
        self.unit_sites = {}  # family -> site indices
        for family, prefix in UNIT_SIGNALS.items():
            index = [i for i, s in enumerate(sites) if s.family == family]
            if index:
                self.unit_sites[family] = index
                self.tags += [f"{prefix}/{sites[i].name}" for i in index]
        # dead units read off the outputs, as each unit's largest value over the batch, or its
        # sum where no output is negative (a ReLU's: its sums give the mean too)
        self._dead_from_outputs = [
            (s.family == "rectifier" and _zero_below_zero(s.module), _never_negative(s.module)) for s in sites
        ]
        self._regions: dict[str, tuple[tuple[float, float], ...]] = {}
        self._stacker, self._indices = Stacker(), Indices()

    def inputs_read(self) -> set[int]:
        """Saturation is read off the inputs, and so are dead units where the output cannot tell
        (a learned slope); a ReLU's dead units and every site's mean and std, off its output."""
        return {i for sites in self.unit_sites.values() for i in sites if not self._dead_from_outputs[i][0]}

    def _saturated_where(self, module: nn.Module) -> tuple[tuple[float, float], ...]:
        """The inputs where phi' < saturation_fraction * max phi', once per kind of module (phi'
        taken by autograd on an out-of-place copy: an in-place activation would break it)."""
        key = repr(module)
        if key not in self._regions:
            copy = module
            if getattr(module, "inplace", False):
                copy = pycopy.copy(module)
                copy.inplace = False
            fraction = self.context.config.saturation_fraction
            self._regions[key] = where_below(copy, fraction * max_derivative(copy))
        return self._regions[key]

    def measure(self, capture, batch, loss_fn) -> Output:
        outputs, inputs = capture.act_outputs, capture.act_inputs
        activations = {s.name: out for s, out in zip(self.sites, outputs) if out is not None}
        like = next((t for t in outputs if t is not None), None)
        if like is None:
            return Output()
        means, stds, dead = [], [], []
        by_shape = groups(outputs, lambda i, t: self._dead_from_outputs[i])
        for (shape, _, reads_dead, never_negative), index in by_shape.items():
            rows = Rows([outputs[i] for i in index], self._stacker, f"out{shape}")
            sums = None
            if reads_dead:  # a unit is dead where its largest output (or its sum, if >= 0) is <= 0
                units = rows.per_unit("sum" if never_negative else "amax")
                dead.append((index, _dead_share(units)))
                sums = units.sum(dim=1) if never_negative else None
            mean, std = rows.mean_std(sums)
            means.append((index, mean))
            stds.append((index, std))
        n = len(self.sites)
        parts = [scatter(n, like, means, self._indices), scatter(n, like, stds, self._indices)]
        for family, sites in self.unit_sites.items():
            parts.append(self._units(family, sites, inputs, like, dead if family == "rectifier" else []))
        return Output(scalars=[(self.tags, torch.cat(parts))], activations=activations)

    def _units(self, family, sites, inputs, like, dead_from_outputs):
        """Each site's saturated or dead share, batched over the sites of one shape and module."""
        position = {site: k for k, site in enumerate(sites)}
        values = [([position[i] for i in index], share) for index, share in dead_from_outputs]
        done = {i for index, _ in dead_from_outputs for i in index}
        modules = {i: self.sites[i].module for i in sites if inputs[i] is not None and i not in done}
        chosen = [inputs[i] if i in modules else None for i in range(len(inputs))]
        for _, index in groups(chosen, lambda i, t: (repr(modules[i]),)).items():
            x = self._stacker.stack("in", [inputs[i] for i in index])
            if family == "saturating":
                share = _share_within(x, self._saturated_where(modules[index[0]]), self._stacker)
            else:  # dead, read off the inputs (a learned or negative slope)
                share = _dead_share(x.amax(dim=1))
            values.append(([position[i] for i in index], share))
        return scatter(len(sites), like, values, self._indices)


def _zero_below_zero(module: nn.Module) -> bool:
    """Whether the module's output is <= 0 exactly where its input is: a ReLU, or a leaky ReLU
    with a slope >= 0. Known from its class and settings (no tensor, no sync); a learned slope
    (PReLU) can change sign, so its inputs are read instead."""
    if isinstance(module, (nn.ReLU, nn.ReLU6)):
        return True
    if isinstance(module, nn.LeakyReLU):
        return module.negative_slope >= 0
    if isinstance(module, nn.RReLU):
        return module.lower >= 0
    return False


def _never_negative(module: nn.Module) -> bool:
    """A ReLU's outputs are >= 0: a unit's are all zero exactly when their sum is."""
    return isinstance(module, (nn.ReLU, nn.ReLU6))


def _share_within(stacked: Tensor, regions: tuple[tuple[float, float], ...], stacker: Stacker) -> Tensor:
    """Per site (row): the share of values inside the disjoint open intervals, as counts of
    comparisons written into a float buffer and summed. Booleans summed would be converted to
    int64 first, eight times the comparisons' time on a Transformer's MLP activations; the float
    counts are exact (integers below 2^24 in float32, 2^53 in float64). A NaN is in no interval."""
    per_row = stacked[0].numel()
    dtype = torch.float32 if per_row <= 2**24 else torch.float64
    flags = stacker.buffer("flags", tuple(stacked.shape), dtype, stacked.device)
    count = torch.zeros(stacked.shape[0], dtype=dtype, device=stacked.device)
    for low, high in regions:
        if high != math.inf:
            count += torch.lt(stacked, high, out=flags).flatten(1).sum(dim=1)
        if low != -math.inf:
            if high == math.inf:
                count += torch.gt(stacked, low, out=flags).flatten(1).sum(dim=1)
            else:
                count -= torch.le(stacked, low, out=flags).flatten(1).sum(dim=1)
    return count / per_row


def _dead_share(largest: Tensor) -> Tensor:
    """Per site (row): the share of units <= 0 for every example of the batch, from each unit's
    largest value over the batch (or its sum, where no value is negative). An activation of one
    value per example is one unit."""
    return (largest.reshape(len(largest), -1) <= 0).float().mean(dim=1)
