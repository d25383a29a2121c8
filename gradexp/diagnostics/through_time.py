"""Gradient through time of an RNN: ||dL/dh_t|| for every time step t.

PyTorch's fused RNN kernels never expose h_t for t < T as tensors on the gradient's path, so at
a diagnostic step the network is replayed step by step with its own weights (nn.RNNCell,
LSTMCell and GRUCell compute exactly what the fused layers do) and the gradient is taken with
respect to every hidden state. The replay uses autograd.grad, so it adds nothing to the
parameters' .grad: training is unchanged by being watched.

A recurrent matrix with spectral radius below 1 shrinks dL/dh_t as t moves away from the end
(vanishing through time); above 1 it can grow (Pascanu et al. 2013, Bengio et al. 1994).
"""

import torch
from torch import Tensor, nn
from torch.func import functional_call

from gradexp import scaled_norms

CELLS = {nn.RNN: nn.RNNCell, nn.LSTM: nn.LSTMCell, nn.GRU: nn.GRUCell}


class ThroughTime:
    def __init__(self, model: nn.Module):
        """`model`: gradexp's RNN (its `read`, its `rnn` layer and its `predict`)."""
        self.model = model
        rnn = model.rnn
        kind = CELLS[type(rnn)]
        extra = {"nonlinearity": rnn.nonlinearity} if isinstance(rnn, nn.RNN) else {}
        self.cells = [
            kind(rnn.input_size if k == 0 else rnn.hidden_size, rnn.hidden_size, **extra).to("meta")
            for k in range(rnn.num_layers)
        ]
        self.is_lstm = isinstance(rnn, nn.LSTM)

    def measure(self, x: Tensor, y: Tensor, loss_fn) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Return ({layer: ||dL/dh_t|| for t = 1..T}, {layer: all hidden states}) on the device."""
        x = self.model.read(x)
        rnn = self.model.rnn
        inputs = list(x.unbind(dim=1))
        states: list[list[Tensor]] = []
        for k, cell in enumerate(self.cells):
            params = {
                name: getattr(rnn, f"{name}_l{k}")
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
            }
            h = x.new_zeros(x.shape[0], rnn.hidden_size)
            state = (h, h) if self.is_lstm else h
            layer_states = []
            for x_t in inputs:
                state = functional_call(cell, params, (x_t, state))
                h = state[0] if self.is_lstm else state
                layer_states.append(h)
            states.append(layer_states)
            inputs = layer_states
        loss = loss_fn(self.model.predict(torch.stack(inputs, dim=1)), y)
        flat = [h for layer in states for h in layer]
        grads = torch.autograd.grad(loss, flat)
        norms = scaled_norms.norms(grads).view(len(states), -1)
        names = [f"rnn{k + 1}" for k in range(len(states))]
        hidden = {name: torch.stack(layer).detach() for name, layer in zip(names, states)}
        return dict(zip(names, norms)), hidden
