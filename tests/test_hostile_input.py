"""Configurations drawn from the whole config space, valid and invalid: every draw either trains
(and ends completed or diverged, with any NaN reported as a divergence) or is refused with a
one-line config error that names a key. Never a traceback, never a hang."""

import math
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gradexp.activations import ACTIVATIONS
from gradexp.config.errors import ConfigError
from gradexp.config.preflight import check_command_line
from gradexp.engine import train
from gradexp.initializers import INITIALIZERS
from gradexp.norms import NORMS
from gradexp.optim import OPTIMIZERS, SCHEDULERS
from gradexp.tasks import SYNTHETIC
from tests.conftest import make_config

# Small enough that a valid draw trains in a fraction of a second; a draw may override any of it.
SMALL = [
    "trainer.steps=3",
    "trainer.batch_size=8",
    "task.n_train=32",
    "task.n_val=8",
    "trainer.eval_every=2",
    "diagnostics.histograms_every=2",
    "diagnostics.figures=false",
]


def choice(registry) -> st.SearchStrategy[str]:
    return st.sampled_from([*sorted(registry), "nonsense", "''"])


number = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32).map(repr),
    st.sampled_from(["0", "-1", "1e300", "-1e-300", "abc", "null", "[1,2]", "{a: 1}", "true", "${oops}"]),
)
small_int = st.one_of(st.integers(-2, 6).map(str), st.sampled_from(["2.5", "x", "null", "1e12"]))

MLP_KEYS = {
    "activation": choice(ACTIVATIONS),
    "norm": choice(NORMS),
    "model.depth": small_int,
    "model.width": small_int,
    "model.residual": st.sampled_from(["true", "false", "maybe"]),
    "model.dropout": number,
}
RNN_KEYS = {
    "model.cell": st.sampled_from(["rnn_tanh", "rnn_relu", "lstm", "gru", "transformer"]),
    "model.hidden_size": small_int,
    "model.num_layers": st.integers(-1, 3).map(str),
    "model.recurrent_init": st.sampled_from(["null", "orthogonal", "identity", "normal", "eye"]),
    "model.recurrent_gain": number,
}
CNN_KEYS = {
    "activation": choice(ACTIVATIONS),
    "norm": choice(NORMS),
    "model.depth": small_int,
    "model.channels": small_int,
    "model.residual": st.sampled_from(["true", "false", "maybe"]),
    "task.size": small_int,
    "task.channels": small_int,
    "task.shift": small_int,
}
TRANSFORMER_KEYS = {
    "activation": choice(ACTIVATIONS),
    "model.depth": small_int,
    "model.d_model": st.sampled_from(["8", "12", "0", "-4", "x"]),
    "model.heads": small_int,
    "model.ffn_mult": small_int,
    "model.norm_position": st.sampled_from(["pre", "post", "middle", "null"]),
    "task.vocab": small_int,
    "task.order": small_int,
    "task.sharpness": number,
}
MODEL_KEYS = {"mlp": MLP_KEYS, "rnn": RNN_KEYS, "cnn": CNN_KEYS, "transformer": TRANSFORMER_KEYS}
READS = {"cnn": "task=images", "transformer": "task=tokens"}  # unless the draw picks a task
COMMON_KEYS = {
    "scheduler.warmup_steps": small_int,
    "init": choice(INITIALIZERS),
    "optimizer": choice(OPTIMIZERS),
    "scheduler": choice(SCHEDULERS),
    "task": choice(SYNTHETIC),  # the published datasets download (tests/test_datasets.py)
    "optimizer.lr": number,
    "optimizer.weight_decay": number,
    "init.std": number,
    "task.seq_len": small_int,
    "task.n_train": small_int,
    "trainer.batch_size": small_int,
    "trainer.steps": st.integers(-1, 3).map(str),
    "trainer.grad_accum": st.integers(0, 2).map(str),
    "trainer.seed": st.sampled_from(["0", "-1", "4294967295", "4294967296", "seed"]),
    "trainer.clip.max_norm": number,
    "trainer.clip.value": number,
    "trainer.log_every": small_int,
    "trainer.precision": st.sampled_from(["32", "bf16", "fp16", "16", "fp8"]),
    "trainer.loss_scale": st.sampled_from(["null", "dynamic", "none", "1024", "0", "-1", "abc", "1e30"]),
    "diagnostics.every": st.sampled_from(["null", "1", "0", "-3"]),
}


@st.composite
def command_lines(draw) -> list[str]:
    model = draw(st.sampled_from(sorted(MODEL_KEYS)))
    keys = {**COMMON_KEYS, **MODEL_KEYS[model]}
    chosen = draw(st.lists(st.sampled_from(sorted(keys)), max_size=5, unique=True))
    task = [READS[model]] if model in READS and "task" not in chosen else []
    return [f"model={model}", *task, *(f"{key}={draw(keys[key])}" for key in chosen)]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(command_lines())
def test_every_drawn_config_trains_or_is_refused_in_one_line(overrides):
    args = [*SMALL, *overrides]
    try:
        check_command_line(args)
    except ConfigError as error:
        message = str(error)
        assert "\n" not in message and message.split(":")[0].strip(), message
        return
    with tempfile.TemporaryDirectory() as run_dir:
        summary = train(make_config(*args, tiny=False), run_dir, show_progress=False)
    assert summary["status"] in ("completed", "diverged"), summary
    if summary["status"] == "completed":  # a NaN anywhere would have been a divergence
        assert all(math.isfinite(v) for v in summary["grad_norm_last"].values())
        assert summary["final_train_loss"] is not None and math.isfinite(summary["final_train_loss"])
    else:
        assert summary["diverged_step"] is not None


@pytest.mark.parametrize(
    "bad", ["model.depth=", "=3", "model..depth=3", "activation=[relu", "+=1", "model.depth=3)"]
)
def test_malformed_overrides_are_refused_in_one_line(bad):
    with pytest.raises(ConfigError) as caught:
        check_command_line([bad])
    assert "\n" not in str(caught.value)
