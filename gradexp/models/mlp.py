"""The MLP: `depth` hidden layers, each linear -> norm -> activation -> dropout, then a linear
output. Its layers are named by role (`001_hidden` ... `007_output`)."""

import math
from dataclasses import dataclass

from torch import Tensor, nn

from gradexp.activations import ACTIVATIONS
from gradexp.config.checks import at_least, fraction
from gradexp.models.spec import ModelSpec, Size, register
from gradexp.network import position_names
from gradexp.norms import NORMS


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
    )
)
