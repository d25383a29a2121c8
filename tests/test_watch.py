"""`gradexp.watch` in a plain PyTorch loop: what it records equals what the same loop computes by
hand (before its clipping, unscaled under a GradScaler), a NaN is reported at its step, Ctrl-C
still leaves the summary, and a watched run's summary has a CLI run's keys."""

import json
import math
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
import torch.nn.functional as F
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

import gradexp
from gradexp import scaled_norms
from gradexp.config.errors import ConfigError
from gradexp.engine import train
from tests.conftest import make_config, read_scalars, read_summary

QUIET = {"report": False}


def histogram(run_dir, tag: str) -> list[float]:
    """Step 0's histogram of `tag`: min, max, sum and sum of squares."""
    acc = EventAccumulator(str(run_dir), size_guidance={"histograms": 0})
    acc.Reload()
    h = acc.Histograms(tag)[0].histogram_value
    return [h.min, h.max, h.sum, h.sum_squares]


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(8, 32),
        nn.Tanh(),
        nn.Linear(32, 32),
        nn.ReLU(),
        nn.Linear(32, 32),
        nn.Tanh(),
        nn.Linear(32, 3),
    )


def data(n: int = 64, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 8, generator=g) * 3, torch.randint(0, 3, (n,), generator=g)


def watched_step(model: nn.Module, opt, monitor, x, y) -> torch.Tensor:
    """The README's loop, one step of it: backward, monitor.step, the update."""
    opt.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    monitor.step(loss)
    opt.step()
    return loss


def weights(model: nn.Module) -> list[nn.Parameter]:
    return [m.weight for m in model if isinstance(m, nn.Linear)]


def test_a_watched_loop_records_the_norms_it_computes_by_hand_before_its_clipping(tmp_path):
    model, (x, y) = mlp(), data()
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    monitor = gradexp.watch(model, opt, tmp_path, log_every=3, diagnostics_every=None, **QUIET)
    by_hand, after_clip = {}, {}
    for step in range(12):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        monitor.step(loss)
        by_hand[step] = [w.grad.norm().item() for w in weights(model)]
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.05)
        after_clip[step] = torch.cat([p.grad.flatten() for p in model.parameters()]).norm().item()
        opt.step()
        with torch.no_grad():  # the loop's own evaluation: not watched
            model(x[:8])
    assert not model._forward_pre_hooks  # the network found, the model's calls run unhooked
    summary = monitor.close()
    scalars = read_scalars(tmp_path)
    layers = summary["layers"]
    assert len(layers) == 4 and summary["status"] == "completed" and summary["steps_completed"] == 12
    for step in (0, 3, 6, 9):
        recorded = [scalars[f"grad_norm/{name}"][step] for name in layers]
        assert recorded == pytest.approx(by_hand[step], rel=1e-5)
        assert scalars["grad_norm/total_clipped"][step] == pytest.approx(after_clip[step], rel=1e-5)
        assert scalars["grad_norm/total"][step] > 0.05 * 1.5 and scalars["clip/clipped"][step] == 1.0
    assert sorted(scalars["grad_norm/total"]) == [0, 3, 6, 9, 11]  # log_every, and the last step
    assert summary["clip_fraction"] == 1.0
    hooks = [model._forward_pre_hooks, opt._optimizer_step_pre_hooks, opt._optimizer_step_post_hooks]
    hooks += [m._forward_hooks for m in model.modules()] + [m._forward_pre_hooks for m in model.modules()]
    assert not any(hooks)  # close() leaves the model and the optimizer as they were


def test_the_update_ratio_is_the_one_from_the_weights_before_and_after_the_step(tmp_path):
    model, (x, y) = mlp(), data()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    monitor = gradexp.watch(model, opt, tmp_path, diagnostics_every=2, histograms_every=None, **QUIET)
    ratios = {}
    for step in range(5):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        monitor.step(F.cross_entropy(model(x), y).detach())
        before = [w.detach().clone() for w in weights(model)]
        opt.step()
        ratios[step] = [((w - b).norm() / b.norm()).item() for w, b in zip(weights(model), before)]
    summary = monitor.close()
    scalars = read_scalars(tmp_path)
    for step in (0, 2, 4):
        recorded = [scalars[f"update_ratio/{name}"][step] for name in summary["layers"]]
        assert recorded == pytest.approx(ratios[step], rel=1e-4)
    assert 1 not in scalars[f"update_ratio/{summary['layers'][0]}"]
    assert summary["update_ratio_last"] == pytest.approx(dict(zip(summary["layers"], ratios[4])), rel=1e-4)


def test_weight_norms_and_updates_past_a_chunk_and_below_float32s_squares_match_float64(tmp_path):
    """Each weight is copied and measured one at a time on the CPU: a matrix of more entries than
    one float32 partial sum takes (scaled_norms.CHUNK) is summed in pieces, and a layer whose
    weights are so small that their squares underflow float32 is measured again, scaled."""
    torch.manual_seed(0)
    wide = nn.Linear(8, scaled_norms.CHUNK // 8 + 100)
    model = nn.Sequential(wide, nn.ReLU(), nn.Linear(wide.out_features, 3))
    with torch.no_grad():
        model[2].weight.mul_(1e-25)  # entries near 1e-27: squares far below float32's smallest
    x, y = data()
    opt = torch.optim.SGD(model.parameters(), lr=1e-30)  # keeps them there; its update is 1e-31
    monitor = gradexp.watch(model, opt, tmp_path, diagnostics_every=1, histograms_every=None, **QUIET)
    watched_step(model, opt, monitor, x, y)  # the monitor measures; the step below is the one checked
    before = [w.detach().double().clone() for w in weights(model)]
    watched_step(model, opt, monitor, x, y)
    after = [w.detach().double() for w in weights(model)]
    summary = monitor.close()
    scalars = read_scalars(tmp_path)
    for name, b, a in zip(summary["layers"], before, after):
        assert scalars[f"weight_norm/{name}"][1] == pytest.approx(b.norm().item(), rel=1e-6)
        assert scalars[f"update_ratio/{name}"][1] == pytest.approx(
            ((a - b).norm() / b.norm()).item(), rel=1e-5
        )


def test_under_a_grad_scaler_the_recorded_norms_are_unscaled_and_the_scale_is_recorded(tmp_path):
    model, (x, y) = mlp(), data()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    monitor = gradexp.watch(
        model, opt, tmp_path, log_every=1, diagnostics_every=1, histograms_every=1, scaler=scaler, **QUIET
    )
    by_hand, signal_scale = {}, {}
    for step in range(4):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        monitor.step(loss)
        signal_scale[step] = scaler.get_scale()
        scaler.unscale_(opt)  # the usual recipe: unscale, clip, step
        by_hand[step] = [w.grad.norm().item() for w in weights(model)]
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1e3)
        scaler.step(opt)
        scaler.update()
    summary = monitor.close()
    scalars = read_scalars(tmp_path)
    for step in range(4):
        recorded = [scalars[f"grad_norm/{name}"][step] for name in summary["layers"]]
        assert recorded == pytest.approx(by_hand[step], rel=1e-5)
        assert scalars["amp/scale"][step] == signal_scale[step]
        assert scalars["clip/clipped"][step] == 0.0
        assert scalars["grad_norm/total_clipped"][step] == pytest.approx(
            scalars["grad_norm/total"][step], rel=1e-5
        )
    # the back-propagated signal is divided by the scale too: the same with and without one
    unscaled = mlp()
    plain = gradexp.watch(
        unscaled, torch.optim.SGD(unscaled.parameters(), lr=0.1), tmp_path / "plain", **QUIET
    )
    F.cross_entropy(unscaled(x), y).backward()
    plain.step(0.0)
    plain.close()
    first = summary["layers"][0]
    assert read_scalars(tmp_path / "plain")[f"grad_signal/{first}"][0] == pytest.approx(
        scalars[f"grad_signal/{first}"][0], rel=1e-5
    )
    scaled, plain_histogram = (
        histogram(folder, f"gradients/{first}") for folder in (tmp_path, tmp_path / "plain")
    )
    assert scaled == pytest.approx(plain_histogram, rel=1e-5)  # min, max, sum, sum of squares
    assert summary["loss_scale"] == "dynamic" and summary["amp_skipped_steps"] == 0


def test_a_nan_injected_at_step_k_is_reported_at_step_k_and_can_stop_the_loop(tmp_path):
    model, (x, y) = mlp(), data()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    monitor = gradexp.watch(model, opt, tmp_path, log_every=5, raise_on_divergence=True, **QUIET)
    k = 7
    with pytest.raises(gradexp.Diverged, match="step 7: first non-finite value in 003_4"):
        for step in range(20):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            if step == k:
                weights(model)[2].grad[0, 0] = float("nan")
            monitor.step(loss)
            opt.step()
            if step == k:
                assert monitor.diverged is None  # not read on the host until a flush
                monitor.flush()
                assert (monitor.diverged.step, monitor.diverged.first_nonfinite_layer) == (k, "003_4")
    assert step == k + 1
    summary = monitor.close()
    assert summary["status"] == "diverged"
    assert (summary["diverged_step"], summary["first_nonfinite_layer"]) == (k, "003_4")
    scalars = read_scalars(tmp_path)
    assert max(scalars["loss/train"]) == k and math.isnan(scalars["grad_norm/003_4"][k])


def test_without_raising_the_monitor_outlives_a_diverged_loop(tmp_path):
    model, (x, y) = mlp(), data()
    opt = torch.optim.SGD(model.parameters(), lr=1e6)  # explodes within a few steps
    with gradexp.watch(
        model, opt, tmp_path, log_every=1, diagnostics_every=1, histograms_every=1, **QUIET
    ) as m:
        for _ in range(30):
            opt.zero_grad()
            loss = F.mse_loss(model(x), F.one_hot(y, 3).float())
            loss.backward()
            m.step(loss)
            opt.step()
    summary = read_summary(tmp_path)
    assert summary["status"] == "diverged" and 0 < summary["diverged_step"] < 30


def test_ctrl_c_in_the_users_loop_leaves_the_summary_and_the_events(tmp_path):
    script = tmp_path / "loop.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import signal, torch, gradexp
            from torch import nn
            # Ctrl-C raises KeyboardInterrupt, as in a terminal (a job a script starts in the
            # background, as a CI runner may run this suite, inherits SIGINT ignored)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            model = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 1))
            opt = torch.optim.SGD(model.parameters(), lr=0.01)
            monitor = gradexp.watch(model, opt, {str(tmp_path / "run")!r}, log_every=1, report=False)
            x, y = torch.randn(32, 8), torch.randn(32, 1)
            step = 0
            while True:
                opt.zero_grad()
                loss = nn.functional.mse_loss(model(x), y)
                loss.backward()
                monitor.step(loss)
                opt.step()
                step += 1
                if step == 50:
                    print("training", flush=True)
            """
        )
    )
    process = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stdout.readline().strip() == "training"
    time.sleep(1.5)  # past the first flush
    process.send_signal(signal.SIGINT)
    try:
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()  # a loop that outlived its Ctrl-C must not outlive the test
    assert process.returncode != 0 and "KeyboardInterrupt" in err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["steps_completed"] >= 50
    assert len(read_scalars(tmp_path / "run")["grad_norm/total"]) >= 50


def test_a_watched_run_has_a_cli_runs_summary_keys(tmp_path):
    cli = train(make_config("trainer.steps=3"), tmp_path / "cli", show_progress=False)
    model, (x, y) = mlp(), data()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gradexp.watch(model, opt, tmp_path / "watched", hparams={"lr": 0.1}, **QUIET) as monitor:
        F.cross_entropy(model(x), y).backward()
        monitor.step(0.0)
        opt.step()
    watched = read_summary(tmp_path / "watched")
    assert list(watched) == list(cli)
    assert watched["overrides"] == ["lr=0.1"] and watched["config"] == {"lr": 0.1}


def test_a_compiled_model_records_its_norms_and_says_which_diagnostics_need_hooks(tmp_path):
    model, (x, y) = mlp(), data()
    compiled = torch.compile(model, backend="eager")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gradexp.watch(compiled, opt, tmp_path, log_every=1, diagnostics_every=1, **QUIET) as monitor:
        for _ in range(3):
            opt.zero_grad()
            loss = F.cross_entropy(compiled(x), y)
            loss.backward()
            by_hand = [w.grad.norm().item() for w in weights(model)]
            monitor.step(loss)
            opt.step()
    summary = read_summary(tmp_path)
    assert list(summary["grad_norm_last"].values()) == pytest.approx(by_hand, rel=1e-5)
    assert "torch.compile" in summary["not_measured"]["GradSignal"]
    assert summary["update_ratio_last"]  # no hooks needed


def test_the_hooks_watch_only_the_first_micro_batch_of_an_accumulated_step(tmp_path):
    model, (x, y) = mlp(), data()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    monitor = gradexp.watch(model, opt, tmp_path, diagnostics_every=1, grad_accum=2, **QUIET)
    z = model[0](x[:32])  # the first and last layers' outputs for the first micro-batch, unwatched
    logits = model[1:](z)
    expected = torch.autograd.grad(F.cross_entropy(logits, y[:32]), [z, logits])
    for half in (slice(0, 32), slice(32, 64)):
        (F.cross_entropy(model(x[half]), y[half]) / 2).backward()
    monitor.step(0.0)
    opt.step()
    summary = monitor.close()
    first, last = summary["layers"][0], summary["layers"][-1]
    recorded = [summary["grad_signal_first"][first], summary["grad_signal_first"][last]]
    assert recorded == pytest.approx([g.norm().item() for g in expected], rel=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [({"log_every": 0}, "log_every=0"), ({"diagnostics_every": 2.5}, "diagnostics_every=2.5")],
)
def test_a_wrong_argument_is_one_line_naming_it(tmp_path, kwargs, named):
    model = mlp()
    with pytest.raises(ConfigError, match=named) as error:
        gradexp.watch(model, torch.optim.SGD(model.parameters(), lr=0.1), tmp_path, **kwargs)
    assert "\n" not in str(error.value)


def test_step_before_any_forward_pass_says_where_to_call_it(tmp_path):
    model = mlp()
    monitor = gradexp.watch(model, torch.optim.SGD(model.parameters(), lr=0.1), tmp_path, **QUIET)
    with pytest.raises(RuntimeError, match=r"right after loss.backward\(\)"):
        monitor.step(0.0)
    monitor.close()
    assert read_summary(tmp_path)["status"] == "completed"


def test_a_step_the_grad_scaler_skips_is_counted_not_taken_for_a_divergence(tmp_path):
    model, (x, y) = mlp(), data()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    monitor = gradexp.watch(model, opt, tmp_path, log_every=1, diagnostics_every=1, scaler=scaler, **QUIET)
    for step in range(4):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        if step == 1:  # an overflow, as float16 would give: the scaler skips this update
            weights(model)[0].grad[0, 0] = float("inf")
        monitor.step(loss)
        scaler.step(opt)
        scaler.update()
    summary = monitor.close()
    scalars = read_scalars(tmp_path)
    assert summary["status"] == "completed" and summary["amp_skipped_steps"] == 1
    assert 1 not in scalars["grad_norm/total"] and {0, 2, 3} <= set(scalars["grad_norm/total"])
    assert scalars["amp/scale"][2] == scalars["amp/scale"][1] / 2  # the scale halved after the skip
    assert scalars["amp/skipped"][3] == 1.0
    # nothing read off the skipped step's backward is written, and the step after it ran without
    # the hooks (they open at an update, which came late): no hook signal there, but the rest
    assert sorted(scalars[f"grad_signal/{summary['layers'][0]}"]) == [0, 3]
    assert sorted(scalars[f"update_ratio/{summary['layers'][0]}"]) == [0, 1, 2, 3]
    assert scalars[f"update_ratio/{summary['layers'][0]}"][1] == 0.0  # the skipped update


def test_a_divergence_raised_inside_a_with_block_leaves_status_diverged(tmp_path):
    model, (x, y) = mlp(), data()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(gradexp.Diverged):
        with gradexp.watch(model, opt, tmp_path, raise_on_divergence=True, **QUIET) as monitor:
            for step in range(5):
                opt.zero_grad()
                loss = F.cross_entropy(model(x), y) * (float("inf") if step == 2 else 1.0)
                loss.backward()
                monitor.step(loss)
                opt.step()
                monitor.flush()
    summary = read_summary(tmp_path)
    assert (summary["status"], summary["diverged_step"], summary["error"]) == ("diverged", 2, None)


def test_a_failure_inside_gradexp_never_stops_the_users_loop(tmp_path, monkeypatch, capsys):
    from gradexp.diagnostics.monitor import Diagnostics

    def broken(self):
        raise OSError("disk full")

    monkeypatch.setattr(Diagnostics, "after_update", broken)
    model, (x, y) = mlp(), data()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    monitor = gradexp.watch(model, opt, tmp_path, diagnostics_every=1, **QUIET)
    for _ in range(3):
        watched_step(model, opt, monitor, x, y)  # the post-hook fails at the first step; the loop goes on
    assert "gradexp.watch stopped recording: OSError: disk full" in capsys.readouterr().err
    summary = read_summary(tmp_path)
    assert summary["status"] == "failed" and summary["error"] == "OSError: disk full"
    assert not opt._optimizer_step_post_hooks and not model._forward_pre_hooks


def test_a_loop_calling_submodules_is_traced_over_its_first_pass_only(tmp_path):
    """Never calling the model itself, the loop is traced as it trains: up to the first backward,
    even where the first output it makes (an unused auxiliary head's) gets no gradient."""
    torch.manual_seed(0)
    model = nn.ModuleDict(
        {
            "aux": nn.Linear(8, 2),
            "encoder": nn.Sequential(nn.Linear(8, 16), nn.Tanh()),
            "head": nn.Linear(16, 3),
        }
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    (x, y), monitor = data(), gradexp.watch(model, opt, tmp_path, log_every=1, grad_accum=2, **QUIET)
    for half in (slice(0, 32), slice(32, 64)):  # two micro-batches before the first step()
        model["aux"](x[half])  # made first, never in the loss
        (F.cross_entropy(model["head"](model["encoder"](x[half])), y[half]) / 2).backward()
    monitor.step(0.0)
    opt.step()
    summary = monitor.close()
    assert [site.name for site in monitor.network.activations] == ["002_encoder.0"]  # one Tanh call
    assert summary["layers"] == ["001_aux", "002_encoder.0", "003_head"]


def test_the_loops_own_metrics_are_recorded_at_their_step_and_end_in_the_summary(tmp_path):
    model, (x, y) = mlp(), data()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    logged = {}
    with gradexp.watch(model, opt, tmp_path, log_every=5, **QUIET) as monitor:
        for step in range(7):
            watched_step(model, opt, monitor, x, y)
            if step % 3 == 0:
                with torch.no_grad():
                    val = F.cross_entropy(model(x[:16]), y[:16])
                monitor.log({"loss/val": val, "acc/val": 0.25 * (step // 3)})  # a tensor and a float
                logged[step] = val.item()
    scalars, summary = read_scalars(tmp_path), read_summary(tmp_path)
    assert scalars["loss/val"] == pytest.approx(logged)
    assert scalars["acc/val"] == {0: 0.0, 3: 0.25, 6: 0.5}
    assert summary["final_val_loss"] == pytest.approx(logged[6]) and summary["final_val_acc"] == 0.5
    assert summary["initial_val_loss"] == pytest.approx(logged[0])
