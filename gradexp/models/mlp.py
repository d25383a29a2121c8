"""The MLP: `depth` hidden layers, each linear -> norm -> activation -> dropout, then a linear
output. Its layers are named by role (`001_hidden` ... `007_output`)."""

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gradexp.activations import ACTIVATIONS
from gradexp.config.checks import at_least, fraction
from gradexp.diagnostics.theory import no_prediction, predict_chi1, verdict
from gradexp.models.spec import ModelSpec, Size, register
from gradexp.network import position_names
from gradexp.norms import NORMS
from gradexp.sinks.layout import fmt
from gradexp.tasks import IMAGES


@dataclass
class MLPConfig:
    name: str = "mlp"
    depth: int = 6  # hidden layers
    width: int = 128  # units per hidden layer
    residual: bool = False  # skip connection around each width-preserving hidden layer
    dropout: float = 0.0  # after each activation


class HiddenLayer(nn.Module):
    """linear -> norm -> activation -> dropout: the norm sits where it controls the
    pre-activation that the activation's derivative is evaluated at."""

    def __init__(self, d_in: int, width: int, cfg):
        super().__init__()
        self.linear = nn.Linear(d_in, width)
        self.norm = NORMS[cfg.norm.name](width)
        self.activation = ACTIVATIONS[cfg.activation.name](cfg.activation)
        self.dropout = nn.Dropout(cfg.model.dropout) if cfg.model.dropout > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.activation(self.norm(self.linear(x))))


class MLP(nn.Module):
    """`depth` hidden layers and a linear output. With `residual`, every hidden layer whose
    input and output widths match adds its input back (He et al. 2016), giving the gradient a
    path that skips the layer's derivative."""

    def __init__(self, d_in: int, d_out: int, cfg):
        super().__init__()
        m: MLPConfig = cfg.model
        self.residual = m.residual
        self.hidden = nn.ModuleList(
            HiddenLayer(d_in if i == 0 else m.width, m.width, cfg) for i in range(m.depth)
        )
        self.output = nn.Linear(m.width, d_out)

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)  # a sequence task is read as one flat vector
        for layer in self.hidden:
            skip = self.residual and layer.linear.in_features == layer.linear.out_features
            x = x + layer(x) if skip else layer(x)
        return self.output(x)

    def layers(self) -> list[tuple[str, nn.Parameter]]:
        weights = [layer.linear.weight for layer in self.hidden] + [self.output.weight]
        names = position_names(["hidden"] * len(self.hidden) + ["output"])
        return list(zip(names, weights))

    gradexp_layers = layers  # the names gradexp records them under

    def gradexp_activations(self) -> list[nn.Module]:
        """Its activation modules, the identity of a deep linear network among them."""
        return [layer.activation for layer in self.hidden]

    def gradexp_blocks(self) -> list:
        """None: each hidden layer is one linear map, and its per-layer signals say it all."""
        return []

    def weight_blocks(self) -> list[Tensor]:
        """What an initializer treats as one matrix: every weight matrix, whole."""
        return [w for _, w in self.layers()]


def _predict(config, model: MLP) -> dict:
    """chi_1 for the network as initialized, or a sentence saying why the theory does not apply.
    sigma_w^2 = fan_in * E[W^2] and the bias statistics are read off the hidden layers, so
    every initializer works without declaring its variance."""
    reason = _not_applicable(config, model)
    if reason is None:
        layers = list(model.hidden)
        square = [m.linear for m in layers if m.linear.in_features == m.linear.out_features] or [
            layers[0].linear
        ]
        weights = torch.cat([m.weight.detach().flatten() for m in square])
        if weights.std() == 0 or abs(weights.mean()) > 0.1 * weights.std():
            reason = "the weights are not zero-mean and random (the theory assumes i.i.d. zero-mean weights)"
    if reason is not None:
        return no_prediction(reason)
    sigma_w2 = sum(m.in_features * m.weight.detach().pow(2).mean().item() for m in square) / len(square)
    biases = torch.cat([m.linear.bias.detach() for m in layers])
    prediction = predict_chi1(
        ACTIVATIONS[config.activation.name](config.activation),
        sigma_w2,
        biases.mean().item(),
        biases.var().item() if biases.numel() > 1 else 0.0,
    )
    if prediction.forward_explodes:  # a growth of 1.001x per layer is no explosion at depth 6: say it
        growth = f"{prediction.forward_growth:.4g}"  # four digits: near 1 is where it matters
        note = (
            f"sigma_w^2 = {fmt(sigma_w2)}, no fixed point q*: the forward variance grows {growth}x per layer"
        )
    else:
        note = f"sigma_w^2 = {fmt(sigma_w2)}, q* = {fmt(prediction.q_star)}"
    return {
        "chi1_predicted": prediction.chi1,
        "depth_scale_predicted": prediction.depth_scale,
        "verdict_predicted": verdict(prediction.chi1, config.model.depth),
        "theory_note": note,
    }


def _not_applicable(config, model: MLP) -> str | None:
    if config.norm.name != "none":
        return f"norm={config.norm.name} rescales every pre-activation"
    if config.model.residual:
        return "residual connections add a path that skips each layer"
    if config.model.dropout > 0:
        return "dropout changes the variance map"
    return None


def _check(c) -> None:
    at_least(c, "model", "depth", 1)
    at_least(c, "model", "width", 1)
    fraction(c, "model", "dropout")


def _size(c, input_shape: tuple[int, ...], outputs: int) -> Size:
    m = c.model
    inputs = math.prod(input_shape)
    hidden = (inputs + 1) * m.width + (m.depth - 1) * (m.width + 1) * m.width
    norm = 2 * m.width * m.depth  # at most a scale and a shift per unit
    return Size(hidden + norm + (m.width + 1) * outputs, m.width * m.depth, ("depth", "width"))


def _describe(model, activation, norm) -> str:
    text = f"mlp {model.depth}x{model.width} {activation.name} norm={norm.name}"
    return text + (" residual" if model.residual else "")


register(
    ModelSpec(
        name="mlp",
        config=MLPConfig,
        build=lambda c, task: MLP(math.prod(task.input_shape), task.d_out, c),
        describe=_describe,
        check=_check,
        size=_size,
        init_blocks=MLP.weight_blocks,
        groups=("activation", "norm"),
        predict=_predict,
        tasks=("blobs", "teacher", "adding", *IMAGES, "custom"),  # images read flat; token ids are no vector
    )
)
