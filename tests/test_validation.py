"""Every kind of config mistake becomes one ConfigError line naming the key, the value and what
is allowed, before anything is built (the CLI prints that line; see test_cli for the command)."""

import pytest

from gradexp.config.errors import ConfigError
from gradexp.config.validate import validate
from tests.conftest import make_config

MISTAKES = [
    # (overrides, the start of the message, what is allowed)
    (["model.width=0"], "model.width=0: out of range", "an integer >= 1"),
    (["model.dropout=1.0"], "model.dropout=1.0: out of range", "[0, 1)"),
    (["model.residual=maybe"], "model.residual=maybe: wrong type", "true or false"),
    (["model=rnn", "model.cell=transformer"], "model.cell=transformer: no such choice", "gru, lstm"),
    (["model=rnn", "model.recurrent_init='null'"], "model.recurrent_init='null': no such choice", "or null"),
    (["model=rnn", "model.recurrent_gain=0"], "model.recurrent_gain=0.0: out of range", "> 0"),
    (["init=uniform", "init.low=0.1", "init.high=0.1"], "init.high=0.1: out of range", "> init.low"),
    (["init=normal", "init.std=inf"], "init.std=inf: not a finite number", "a finite number"),
    (["init=kaiming_normal", "init.nonlinearity=swish"], "init.nonlinearity=swish", "leaky_relu"),
    (["optimizer=adam", "optimizer.betas=[0.9,null]"], "optimizer.betas[1]=null: wrong type", "a number"),
    (["optimizer=adam", "optimizer.betas=[0.9]"], "optimizer.betas=[0.9]: out of range", "two numbers"),
    (["optimizer=momentum", "optimizer.momentum=1.0"], "optimizer.momentum=1.0: out of range", "[0, 1)"),
    (["scheduler=cosine", "scheduler.t_max=0"], "scheduler.t_max=0: out of range", ">= 1 or null"),
    (["task.n_classes=1"], "task.n_classes=1: out of range", ">= 2"),
    (["trainer.batch_size=999999"], "trainer.batch_size=999999: out of range", "task.n_train"),
    (["norm=batchnorm", "trainer.batch_size=1"], "trainer.batch_size=1: out of range", "norm=batchnorm"),
    (["trainer.seed=-1"], "trainer.seed=-1: out of range", "[0, 4294967295]"),
    (["trainer.clip=5"], "trainer.clip=5: wrong type", "a mapping with keys max_norm, value"),
    (["trainer.clip.value=-1"], "trainer.clip.value=-1.0: out of range", "> 0 or null"),
    (["trainer.device=cuda:x"], "trainer.device=cuda:x: not a device", "cuda:N"),
    (["trainer.precision=16"], "trainer.precision='16': no such choice", "32, bf16, fp16"),
    (["trainer.loss_scale=0"], "trainer.loss_scale=0: out of range", "dynamic, none, a number > 0"),
    (["trainer.loss_scale=big"], "trainer.loss_scale=big: no such choice", "dynamic, none, a number > 0"),
    (["+model.depht=3"], "model.depht: no such key", "depth"),
]


@pytest.mark.parametrize("overrides, message, allowed", MISTAKES, ids=[" ".join(m[0]) for m in MISTAKES])
def test_config_mistake_is_one_line_with_key_value_and_allowed(overrides, message, allowed):
    with pytest.raises(ConfigError) as caught:
        validate(make_config(*overrides))
    text = str(caught.value)
    assert text.startswith(message) and allowed in text.split("; allowed: ")[1]
    assert "\n" not in text


def test_a_missing_group_is_named():
    cfg = make_config("~optimizer")
    with pytest.raises(ConfigError, match=r"^optimizer: missing; allowed: adagrad, adam"):
        validate(cfg)
