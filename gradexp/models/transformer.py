"""The Transformer: token and position embeddings, `depth` blocks of causal multi-head
self-attention and an MLP, and a linear head predicting the next token at every position.

`norm_position` places each block's LayerNorms. Post-LN (the original Transformer) normalizes
after each residual addition, x <- LN(x + f(x)): the gradient reaching a block passes through
every LayerNorm above it, and at initialization the blocks near the output get gradients as
large as the first ones, or larger; Adam's first steps then move them too far, which is why
Post-LN needs learning-rate warmup. Pre-LN normalizes each branch's input, x <- x + f(LN(x)),
with a final LN before the head: the residual stream is an identity path from output to input,
and each block's LayerNorm divides by a stream that grows with depth, so its blocks' gradients
shrink toward the output (Xiong et al. 2020; the postln_vs_preln preset measures both)."""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradexp.activations import ACTIVATIONS
from gradexp.config.checks import at_least, choice, require
from gradexp.models.spec import ModelSpec, Size, register

NORM_POSITIONS = {"pre": "LN on each branch's input", "post": "LN after each residual addition"}


@dataclass
class TransformerConfig:
    name: str = "transformer"
    depth: int = 4  # blocks
    d_model: int = 64  # width of the residual stream
    heads: int = 4  # attention heads; d_model must divide into them
    ffn_mult: int = 4  # the MLP's hidden width, in multiples of d_model
    norm_position: str = "pre"  # pre | post


class SelfAttention(nn.Module):
    """Causal multi-head self-attention: one linear map to queries, keys and values, PyTorch's
    fused scaled dot-product attention, one linear map back."""

    def __init__(self, d_model: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor) -> Tensor:
        batch, length, width = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(out.transpose(1, 2).reshape(batch, length, width))


class FeedForward(nn.Module):
    def __init__(self, d_model: int, hidden: int, cfg):
        super().__init__()
        self.fc1 = nn.Linear(d_model, hidden)
        self.act = ACTIVATIONS[cfg.activation.name](cfg.activation)
        self.fc2 = nn.Linear(hidden, d_model)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class TransformerBlock(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        m: TransformerConfig = cfg.model
        self.pre = m.norm_position == "pre"
        self.norm1, self.norm2 = nn.LayerNorm(m.d_model), nn.LayerNorm(m.d_model)
        self.attn = SelfAttention(m.d_model, m.heads)
        self.mlp = FeedForward(m.d_model, m.ffn_mult * m.d_model, cfg)

    def forward(self, x: Tensor) -> Tensor:
        if self.pre:
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))
        x = self.norm1(x + self.attn(x))
        return self.norm2(x + self.mlp(x))


class Transformer(nn.Module):
    """Reads (batch, seq_len) token ids; returns (batch, seq_len, vocab) next-token logits."""

    def __init__(self, vocab: int, seq_len: int, cfg):
        super().__init__()
        m: TransformerConfig = cfg.model
        self.embed = nn.Embedding(vocab, m.d_model)
        self.position = nn.Embedding(seq_len, m.d_model)  # called on 0..T-1: an output to measure
        self.blocks = nn.ModuleList(TransformerBlock(cfg) for _ in range(m.depth))
        self.final_norm = nn.LayerNorm(m.d_model) if m.norm_position == "pre" else nn.Identity()
        self.head = nn.Linear(m.d_model, vocab)

    def forward(self, tokens: Tensor) -> Tensor:
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.embed(tokens) + self.position(positions)
        for block in self.blocks:
            x = block(x)
        return self.head(self.final_norm(x))


def _check(c) -> None:
    m = c.model
    for key in ("depth", "d_model", "heads", "ffn_mult"):
        at_least(c, "model", key, 1)
    require(
        m.d_model % m.heads == 0,
        "model.heads",
        m.heads,
        f"a divisor of model.d_model ({m.d_model}): the heads share its width",
    )
    choice("model.norm_position", m.norm_position, NORM_POSITIONS)


def _size(c, input_shape: tuple[int, ...], outputs: int) -> Size:
    m, seq_len = c.model, input_shape[0]
    d, hidden = m.d_model, m.ffn_mult * m.d_model
    block = (d + 1) * 3 * d + (d + 1) * d + (d + 1) * hidden + (hidden + 1) * d + 4 * d
    parameters = (outputs + seq_len) * d + m.depth * block + 2 * d + (d + 1) * outputs
    units = seq_len * (m.depth * (8 * d + 2 * hidden + m.heads * seq_len) + outputs)
    return Size(parameters, units, ("depth", "d_model"))


def _describe(model, activation, norm) -> str:
    return (
        f"transformer {model.norm_position}-LN {model.depth}x{model.d_model} "
        f"heads={model.heads} ffn x{model.ffn_mult} {activation.name}"
    )


register(
    ModelSpec(
        name="transformer",
        config=TransformerConfig,
        build=lambda c, task: Transformer(task.vocab, task.input_shape[0], c),
        describe=_describe,
        check=_check,
        size=_size,
        groups=("activation",),
        no_theory="it describes gradexp's plain MLP; read the per-block signals",
        tasks=("tokens",),
    )
)
