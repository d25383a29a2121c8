"""The networks gradexp trains: an MLP and an RNN, each listing its weight matrices as named
layers in input-to-output order, which is what the recorders measure."""

import math

from torch import Tensor, nn

from gradexp.activations import ACTIVATIONS
from gradexp.config.schema import MLPConfig, RNNConfig, RunConfig
from gradexp.initializers import initialize, initialize_recurrent
from gradexp.norms import NORMS
from gradexp.tasks import Task


def layer_names(roles: list[str]) -> list[str]:
    """Prefix each role with its position, zero-padded to a fixed width, so names sort input to
    output in TensorBoard and tables, and layer 5 has the same tag in a network of depth 5 as in
    one of depth 50 (sweeps overlay them): ['001_hidden', ..., '012_output']."""
    return [f"{i:03d}_{role}" for i, role in enumerate(roles, start=1)]


class HiddenLayer(nn.Module):
    """linear -> norm -> activation -> dropout: the norm sits where it controls the
    pre-activation that the activation's derivative is evaluated at."""

    def __init__(self, d_in: int, width: int, cfg: RunConfig):
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

    def __init__(self, d_in: int, d_out: int, cfg: RunConfig):
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

    def weight_blocks(self) -> list[Tensor]:
        """What an initializer treats as one matrix: every weight matrix, whole."""
        return [w for _, w in self.layers()]

    def layers(self) -> list[tuple[str, nn.Parameter]]:
        weights = [layer.linear.weight for layer in self.hidden] + [self.output.weight]
        names = layer_names(["hidden"] * len(self.hidden) + ["output"])
        return list(zip(names, weights))


RNN_CELLS = {
    "rnn_tanh": (nn.RNN, {"nonlinearity": "tanh"}),
    "rnn_relu": (nn.RNN, {"nonlinearity": "relu"}),
    "lstm": (nn.LSTM, {}),
    "gru": (nn.GRU, {}),
}


class RNN(nn.Module):
    """A stacked recurrent network; a linear head reads the last hidden state. A non-sequence
    input of shape (batch, d) is read as a sequence of d scalars."""

    def __init__(self, d_in: int, d_out: int, cfg: RunConfig):
        super().__init__()
        m: RNNConfig = cfg.model
        cell, kwargs = RNN_CELLS[m.cell]
        self.rnn = cell(d_in, m.hidden_size, m.num_layers, batch_first=True, **kwargs)
        self.output = nn.Linear(m.hidden_size, d_out)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 2:
            x = x.unsqueeze(-1)
        states, _ = self.rnn(x)
        return self.output(states[:, -1])

    def layers(self) -> list[tuple[str, nn.Parameter]]:
        """Each recurrent layer reports its input-to-hidden and hidden-to-hidden matrices."""
        roles, weights = [], []
        for k in range(self.rnn.num_layers):
            roles += [f"rnn{k + 1}_ih", f"rnn{k + 1}_hh"]
            weights += [getattr(self.rnn, f"weight_ih_l{k}"), getattr(self.rnn, f"weight_hh_l{k}")]
        roles.append("output")
        weights.append(self.output.weight)
        return list(zip(layer_names(roles), weights))

    def recurrent_weights(self) -> list[nn.Parameter]:
        return [getattr(self.rnn, f"weight_hh_l{k}") for k in range(self.rnn.num_layers)]

    def weight_blocks(self) -> list[Tensor]:
        """What an initializer treats as one matrix: each gate's H-row block of W_ih and W_hh
        (an LSTM stacks 4 gates, a GRU 3), so fans and orthogonality are per gate, then the head."""
        hidden = self.rnn.hidden_size
        return [block for _, w in self.layers()[:-1] for block in w.split(hidden)] + [self.output.weight]


_GATES = {"lstm": 4, "gru": 3}  # weight blocks per recurrent layer; a vanilla cell has one


def parameter_count(cfg: RunConfig, input_shape: tuple[int, ...], outputs: int) -> int:
    """The number of parameters the configured network will have, as an exact Python integer
    computed without building it (a depth of 10^4000 is a number here, not a loop)."""
    m = cfg.model
    if m.name == "mlp":
        inputs = math.prod(input_shape)
        hidden = (inputs + 1) * m.width + (m.depth - 1) * (m.width + 1) * m.width
        norm = 2 * m.width * m.depth  # at most a scale and a shift per unit
        return hidden + norm + (m.width + 1) * outputs
    gates, features = _GATES.get(m.cell, 1), input_shape[-1] if len(input_shape) == 2 else 1
    first = gates * m.hidden_size * (features + m.hidden_size + 2)
    rest = (m.num_layers - 1) * gates * m.hidden_size * (2 * m.hidden_size + 2)
    return first + rest + (m.hidden_size + 1) * outputs


def build_model(cfg: RunConfig, task: Task) -> nn.Module:
    """Build the configured network for the task's shapes and initialize it."""
    if cfg.model.name == "mlp":
        model = MLP(math.prod(task.input_shape), task.d_out, cfg)
    else:
        features = task.input_shape[-1] if len(task.input_shape) == 2 else 1
        model = RNN(features, task.d_out, cfg)
    weights = model.weight_blocks()
    biases = [p for name, p in model.named_parameters() if "bias" in name.split(".")[-1]]
    norm_params = {
        id(p)
        for m in model.modules()
        if isinstance(m, (nn.BatchNorm1d, nn.LayerNorm))
        for p in m.parameters()
    }
    initialize(weights, [b for b in biases if id(b) not in norm_params], cfg.init)
    if isinstance(model, RNN) and cfg.model.recurrent_init is not None:
        for w_hh in model.recurrent_weights():
            initialize_recurrent(w_hh, cfg.model.recurrent_init, cfg.model.recurrent_gain)
    return model
