"""The RNN: a stacked recurrent network (vanilla, LSTM or GRU); a linear head reads the last
hidden state. Each recurrent layer is two recorded layers, W_ih and W_hh (`001_rnn1_ih`,
`002_rnn1_hh`, ..., then `003_output`)."""

from dataclasses import dataclass

from torch import Tensor, nn

from gradexp.config.checks import at_least, choice, positive
from gradexp.config.errors import ConfigError
from gradexp.diagnostics.through_time import ThroughTime
from gradexp.initializers import RECURRENT_INITIALIZERS, initialize_recurrent
from gradexp.models.spec import ModelSpec, Size, register
from gradexp.network import position_names
from gradexp.tasks import IMAGES


@dataclass
class RNNConfig:
    name: str = "rnn"
    cell: str = "rnn_tanh"  # rnn_tanh | rnn_relu | lstm | gru
    hidden_size: int = 64
    num_layers: int = 1
    recurrent_init: str | None = None  # null: the init group sets W_hh too
    recurrent_gain: float = 1.0  # spectral scale of W_hh under recurrent_init


RNN_CELLS = {
    "rnn_tanh": (nn.RNN, {"nonlinearity": "tanh"}),
    "rnn_relu": (nn.RNN, {"nonlinearity": "relu"}),
    "lstm": (nn.LSTM, {}),
    "gru": (nn.GRU, {}),
}
_GATES = {"lstm": 4, "gru": 3}  # weight blocks per recurrent layer; a vanilla cell has one


class RNN(nn.Module):
    """A stacked recurrent network; a linear head reads the last hidden state. A non-sequence
    input of shape (batch, d) is read as a sequence of d scalars, and an image (batch, C, H, W)
    row by row: H steps of C x W values (Le et al. 2015's row MNIST: 28 steps of 28 pixels).
    Given a `vocab`, it reads token ids through an embedding and predicts the next token at
    every position."""

    def __init__(self, d_in: int, d_out: int, cfg, vocab: int | None = None):
        super().__init__()
        m: RNNConfig = cfg.model
        cell, kwargs = RNN_CELLS[m.cell]
        self.embed = nn.Embedding(vocab, m.hidden_size) if vocab else None
        d_in = m.hidden_size if vocab else d_in
        self.rnn = cell(d_in, m.hidden_size, m.num_layers, batch_first=True, **kwargs)
        self.output = nn.Linear(m.hidden_size, d_out)

    def forward(self, x: Tensor) -> Tensor:
        states, _ = self.rnn(self.read(x))
        return self.predict(states)

    def read(self, x: Tensor) -> Tensor:
        """The input as a (batch, time, features) sequence."""
        if self.embed is not None:
            return self.embed(x)
        if x.dim() == 4:  # images: a row of every channel per step
            return x.permute(0, 2, 1, 3).flatten(2)
        return x.unsqueeze(-1) if x.dim() == 2 else x

    def predict(self, states: Tensor) -> Tensor:
        """The head on the last layer's states: at every position for tokens, else at the end."""
        return self.output(states if self.embed is not None else states[:, -1])

    def layers(self) -> list[tuple[str, nn.Parameter]]:
        """Each recurrent layer reports its input-to-hidden and hidden-to-hidden matrices (after
        the embedding, when it reads tokens)."""
        roles, weights = (["embed"], [self.embed.weight]) if self.embed is not None else ([], [])
        for k in range(self.rnn.num_layers):
            roles += [f"rnn{k + 1}_ih", f"rnn{k + 1}_hh"]
            weights += self._matrices(k)
        roles.append("output")
        weights.append(self.output.weight)
        return list(zip(position_names(roles), weights))

    gradexp_layers = layers

    def gradexp_blocks(self) -> list:
        return []

    def gradexp_through_time(self, x: Tensor, y: Tensor, loss_fn) -> tuple[dict, dict]:
        """||dL/dh_t|| for every time step of every recurrent layer, and the hidden states, by
        replaying the fused layer cell by cell (the gradient-through-time measurement asks for
        it: only a network that can replay itself has one)."""
        if not hasattr(self, "_replay"):
            self._replay = ThroughTime(self)
        return self._replay.measure(x, y, loss_fn)

    def recurrent_weights(self) -> list[nn.Parameter]:
        return [getattr(self.rnn, f"weight_hh_l{k}") for k in range(self.rnn.num_layers)]

    def weight_blocks(self) -> list[Tensor]:
        """What an initializer treats as one matrix: each gate's H-row block of W_ih and W_hh
        (an LSTM stacks 4 gates, a GRU 3), so fans and orthogonality are per gate, then the head."""
        hidden = self.rnn.hidden_size
        recurrent = [w for k in range(self.rnn.num_layers) for w in self._matrices(k)]
        embed = [self.embed.weight] if self.embed is not None else []
        return embed + [block for w in recurrent for block in w.split(hidden)] + [self.output.weight]

    def _matrices(self, k: int) -> tuple[nn.Parameter, nn.Parameter]:
        return getattr(self.rnn, f"weight_ih_l{k}"), getattr(self.rnn, f"weight_hh_l{k}")


def _check(c) -> None:
    choice("model.cell", c.model.cell, RNN_CELLS)
    if c.model.recurrent_init not in (None, *RECURRENT_INITIALIZERS):
        allowed = ", ".join(RECURRENT_INITIALIZERS) + ", or null (the init group)"
        raise ConfigError("model.recurrent_init", c.model.recurrent_init, "no such choice", allowed)
    at_least(c, "model", "hidden_size", 1)
    at_least(c, "model", "num_layers", 1)
    positive(c, "model", "recurrent_gain")


def _features(input_shape: tuple[int, ...]) -> int:
    """Values read per step: a scalar, a sequence's features, or an image row of every channel."""
    if len(input_shape) == 3:
        return input_shape[0] * input_shape[2]
    return input_shape[-1] if len(input_shape) == 2 else 1


def _steps(input_shape: tuple[int, ...]) -> int:
    return input_shape[1] if len(input_shape) == 3 else input_shape[0]


def _size(c, input_shape: tuple[int, ...], outputs: int) -> Size:
    m = c.model
    tokens = c.task.name == "tokens"  # read through an embedding of hidden_size
    gates, features = _GATES.get(m.cell, 1), m.hidden_size if tokens else _features(input_shape)
    first = gates * m.hidden_size * (features + m.hidden_size + 2) + (
        outputs * m.hidden_size if tokens else 0
    )
    rest = (m.num_layers - 1) * gates * m.hidden_size * (2 * m.hidden_size + 2)
    units = m.hidden_size * m.num_layers * _steps(input_shape)
    return Size(first + rest + (m.hidden_size + 1) * outputs, units, ("hidden_size", "num_layers"))


def _after_init(model: RNN, c) -> None:
    if c.model.recurrent_init is not None:
        for w_hh in model.recurrent_weights():
            initialize_recurrent(w_hh, c.model.recurrent_init, c.model.recurrent_gain)


register(
    ModelSpec(
        name="rnn",
        config=RNNConfig,
        build=lambda c, task: RNN(_features(task.input_shape), task.d_out, c, task.vocab),
        describe=lambda model, activation, norm: f"rnn {model.cell} {model.num_layers}x{model.hidden_size}",
        check=_check,
        size=_size,
        init_blocks=RNN.weight_blocks,
        after_init=_after_init,
        nonlinearity=("an RNN's nonlinearity is model.cell", "model.cell=rnn_tanh, rnn_relu, lstm, gru"),
        no_theory="it describes MLPs; for an RNN read the gradient through time",
        depth_axis=False,
        tasks=("blobs", "teacher", "adding", "tokens", *IMAGES),  # images row by row
    )
)
