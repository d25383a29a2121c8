"""The forward half of the argument, at every activation site (each call of an activation module):

- act_mean/<site>, act_std/<site>: the mean and std of the activation's output;
- saturation/<site> (sigmoid, tanh, softsign, ELU, GELU...): the share of values where
  phi' < fraction * max phi', which pass (almost) no gradient;
- dead/<site> (the ReLU family): the share of units whose input is <= 0 for every example of
  the batch, which pass no gradient (or only the leak). A unit is one entry of the output past
  the batch dimension (a feature, or a channel at a position).
A site is named after the layer that ran before it: an MLP's `003_hidden` activation follows its
`003_hidden` linear map."""

import torch

from gradexp.diagnostics.theory import derivative, max_derivative
from gradexp.measurements.base import Context, Measurement, Output, Signal, measurement
from gradexp.measurements.reduce import Stacker, groups, mean_std, scatter

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
        self._thresholds: dict[str, float] = {}
        self._signs: dict[str, bool] = {}
        self._stacker = Stacker()

    def _threshold(self, module) -> float:
        key = repr(module)
        if key not in self._thresholds:
            self._thresholds[key] = self.context.config.saturation_fraction * max_derivative(module)
        return self._thresholds[key]

    def _negative_gives_non_positive(self, module, like) -> bool:
        """A ReLU, or a leaky ReLU with a slope >= 0: its output is <= 0 exactly where its input is
        (read once per kind of module: it is a host sync)."""
        key = repr(module)
        if key not in self._signs:
            self._signs[key] = bool(module.forward(like.new_full((1,), -1.0)) <= 0)
        return self._signs[key]

    def measure(self, capture, batch, loss_fn) -> Output:
        outputs, inputs = capture.act_outputs, capture.act_inputs
        activations = {s.name: out for s, out in zip(self.sites, outputs) if out is not None}
        like = next((t for t in outputs if t is not None), None)
        if like is None:
            return Output()
        means, stds = [], []
        for (shape, *_), index in groups(outputs).items():
            stacked = self._stacker.stack(f"out{shape}", [outputs[i] for i in index])
            mean, std = mean_std(stacked)
            means.append((index, mean))
            stds.append((index, std))
        n = len(self.sites)
        parts = [scatter(n, like, means), scatter(n, like, stds)]
        for family, sites in self.unit_sites.items():
            parts.append(self._units(family, sites, inputs, outputs, like))
        return Output(scalars=[(self.tags, torch.cat(parts))], activations=activations)

    def _units(self, family, sites, inputs, outputs, like):
        """Each site's saturated or dead share, batched over the sites of one shape and module."""
        present = [i for i in sites if inputs[i] is not None]
        modules = {i: self.sites[i].module for i in present}
        values = []
        by = groups(
            [inputs[i] if i in modules else None for i in range(len(inputs))],
            lambda i, t: (repr(modules[i]),),
        )
        for _, index in by.items():
            module = modules[index[0]]
            if family == "saturating":
                x = self._stacker.stack("in", [inputs[i] for i in index])
                share = (derivative(module, x) < self._threshold(module)).float().flatten(1).mean(dim=1)
            else:  # dead: input <= 0 for every example; a ReLU's output tells that where its input does
                source = outputs if self._negative_gives_non_positive(module, like) else inputs
                x = self._stacker.stack("units", [source[i] for i in index])
                share = (x.amax(dim=1) <= 0).float().flatten(1).mean(dim=1)
            values.append(([sites.index(i) for i in index], share))
        return scatter(len(sites), like, values)
