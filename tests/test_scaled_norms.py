"""Norms at the edges of float32: finite entries always give a finite norm, right to float32
precision, from 1e-30 to float32's largest; only a NaN or infinite entry gives a non-finite one,
and only that is a divergence."""

import math

import pytest
import torch

from gradexp import scaled_norms
from gradexp.clipping import clip_gradients
from gradexp.config.validate import validate
from gradexp.engine import build_run, train
from gradexp.measurements.reduce import Rows, Stacker, _centred_mean_std
from tests.conftest import make_config, read_scalars

SCALES = [1e-40, 1e-30, 1e-25, 1e-20, 1e-3, 1.0, 1e19, 1e21, 1e30, 1e36]


def tensors_at(scale: float) -> list[torch.Tensor]:
    """A matrix, a vector and a single entry with magnitudes spread over a factor of 10 around
    `scale`, in float32 (0.1 * 3.4e38 stays finite at the largest scale)."""
    generator = torch.Generator().manual_seed(int(-math.log10(scale) * 7) % 1000)
    spread = lambda *shape: torch.rand(*shape, generator=generator, dtype=torch.float64) + 0.1  # noqa: E731
    signs = lambda *shape: torch.randint(0, 2, shape, generator=generator) * 2 - 1  # noqa: E731
    parts = [spread(300, 200) * signs(300, 200), spread(1000) * signs(1000), spread(1)]
    return [(p * scale).float() for p in parts]


def float64_norms(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack([t.double().norm() for t in tensors])


@pytest.mark.parametrize("scale", SCALES)
def test_norms_of_finite_entries_are_finite_and_right_to_float32_precision(scale):
    tensors = tensors_at(scale)
    expected = float64_norms(tensors)
    assert torch.isfinite(expected).all() and (expected > 0).all()
    for measured in (scaled_norms.norms(tensors), scaled_norms._scaled(tensors)):  # CPU path, GPU path
        torch.testing.assert_close(measured.double(), expected, rtol=1e-5, atol=0)
    rows = torch.stack([tensors[1], tensors[1].flip(0)])
    for measured in (scaled_norms.row_norms(rows), scaled_norms._scaled_rows(rows)):
        torch.testing.assert_close(measured, float64_norms(list(rows)), rtol=1e-5, atol=0)


@pytest.mark.parametrize("scale", SCALES)
def test_a_hooks_norm_of_one_tensor_is_as_right_as_the_batched_norms(scale):
    """A diagnostic hook reduces each gradient to its norm where it is produced (norm_now), one
    tensor at a time: as right as `norms` over the whole float32 range, past CHUNK entries, and in
    half precision."""
    generator = torch.Generator().manual_seed(1)
    tensors = [*tensors_at(scale), torch.randn(70_000, generator=generator) * scale]
    tensors.append(tensors[1].bfloat16())
    for t in tensors:
        got = scaled_norms.norm_now(t)
        assert got.dim() == 0
        torch.testing.assert_close(got.double(), t.double().norm(), rtol=1e-5, atol=0)
    nan, inf, zero, empty = (
        scaled_norms.norm_now(t)
        for t in (
            torch.tensor([1.0, math.nan]),
            torch.tensor([-math.inf, 1e30]),
            torch.zeros(5),
            torch.zeros(0),
        )
    )
    assert math.isnan(nan) and math.isinf(inf) and zero == 0 and empty == 0


def test_norms_of_millions_of_entries_are_right_to_float32_precision():
    """The CPU sums float32 squares in a few long lanes: over 16M entries, 9e-6 off for a dot
    product and 6e-4 for a norm, unless summed in pieces."""
    generator = torch.Generator().manual_seed(0)
    large = [torch.randn(4096, 4096, generator=generator), torch.randn(1_000_000, generator=generator) * 1e21]
    expected = float64_norms(large)
    for measured in (scaled_norms.norms(large), scaled_norms._scaled(large)):
        torch.testing.assert_close(measured.double(), expected, rtol=1e-5, atol=0)
    rows = torch.randn(3, 300_000, generator=generator)
    torch.testing.assert_close(scaled_norms.row_norms(rows), float64_norms(list(rows)), rtol=1e-5, atol=0)


def test_cpu_norms_of_views_and_empty_tensors_are_right():
    """The CPU's float32 path takes each tensor flat (dot products): a transposed matrix, a strided
    slice and a channels-last kernel are copied flat first, an empty tensor has norm 0, and a
    tensor past CHUNK entries is summed in pieces; each matches float64, in its place in the list."""
    generator = torch.Generator().manual_seed(1)
    matrix = torch.randn(300, 200, generator=generator)
    kernel = torch.randn(8, 4, 3, 3, generator=generator).to(memory_format=torch.channels_last)
    tensors = [
        matrix.t(),
        matrix[::3, 1::2],
        kernel,
        torch.zeros(0),
        torch.randn(scaled_norms.CHUNK + 7, generator=generator),
        torch.tensor(-3.0),
    ]
    assert not tensors[0].is_contiguous() and not tensors[2].is_contiguous()
    measured = scaled_norms.norms(tensors)
    expected = torch.stack([t.double().norm() for t in tensors])
    torch.testing.assert_close(measured.double(), expected, rtol=1e-6, atol=0)
    assert measured[3].item() == 0.0 and measured[5].item() == 3.0


def test_float16_is_never_scaled_out_of_its_range():
    """A scale of 2^20 would be infinite in float16: its norms are float32 sums as they are."""
    small = torch.full((4, 100), 1e-6, dtype=torch.float16)
    expected = float64_norms(list(small))
    for measured in (
        scaled_norms.row_norms(small),
        scaled_norms._scaled_rows(small),
        scaled_norms._scaled(list(small)),
    ):
        torch.testing.assert_close(measured.double(), expected, rtol=1e-5, atol=0)


def test_empty_tensors_have_norm_zero():
    for measure in (scaled_norms.norms, scaled_norms._scaled):
        assert measure([torch.zeros(0, 5), torch.ones(4)]).tolist() == [0.0, 2.0]
    assert scaled_norms.row_norms(torch.zeros(3, 0)).tolist() == [0.0] * 3


def test_a_plain_float32_norm_fails_where_the_scaled_one_does_not():
    """The reason for the module: torch's own norm overflows at 1e21 and zeroes 1e-25."""
    big, small = tensors_at(1e21)[0], tensors_at(1e-25)[0]
    assert torch.linalg.vector_norm(big).isinf() and torch.linalg.vector_norm(small) == 0
    assert torch.isfinite(scaled_norms.norms([big, small])).all() and (scaled_norms.norms([small]) > 0).all()


def test_a_norm_past_float32s_range_stays_finite_in_float64():
    entries = torch.full((10_000,), 3e38)
    assert scaled_norms.norms([entries]).item() == pytest.approx(3e40, rel=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_norms_are_taken_in_float32(dtype):
    """A float16 result would round to three digits and overflow at 65504."""
    tensors = [torch.full((1000,), 1000.0, dtype=dtype), torch.full((100,), 1e-6, dtype=dtype)]
    expected = float64_norms(tensors)
    for measured in (scaled_norms.norms(tensors), scaled_norms._scaled(tensors)):
        torch.testing.assert_close(measured.double(), expected, rtol=1e-5, atol=0)


def test_nan_and_infinite_entries_give_nan_and_infinite_norms_and_zero_gives_zero():
    for measure in (scaled_norms.norms, scaled_norms._scaled):
        nan, inf, zero = measure(
            [torch.tensor([1.0, math.nan]), torch.tensor([-math.inf, 1e30]), torch.zeros(5)]
        )
        assert math.isnan(nan) and math.isinf(inf) and zero == 0


def test_zero_nan_and_infinite_tensors_beside_ones_that_need_scaling_each_get_their_own_norm():
    """On the CPU the tensors a float32 sum cannot measure are sorted: an exactly-zero, NaN or
    infinite one takes its largest entry as its norm, a tiny or huge one is measured scaled."""
    tensors = [
        torch.zeros(300),
        torch.full((300,), 1e-25),
        torch.tensor([1.0, math.inf, 2.0]),
        torch.tensor([math.nan, math.inf, 1.0]),
        torch.full((300,), 1e21),
        torch.tensor([3.0, 4.0]),
        torch.full((7,), 1e-40),  # subnormal entries
    ]
    got = scaled_norms.norms(tensors).tolist()
    want = [torch.linalg.vector_norm(t.double()).item() for t in tensors]
    assert got[0] == 0 and got[2] == math.inf and math.isnan(got[3])
    for g, w in zip(got[1:2] + got[4:], want[1:2] + want[4:]):
        assert g == pytest.approx(w, rel=1e-6)


def huge_gradient_run(tmp_path, *extra):
    """A real run whose recorder is handed gradients set by hand: entries of 1e21 in one layer,
    1e-25 in another (what a plain float32 norm reads as infinite and as zero)."""
    config = validate(make_config("trainer.steps=1", "diagnostics.every=null", *extra))
    run = build_run(config, tmp_path, show_progress=False, started=0.0, threads=None)
    for p in run.model.parameters():
        p.grad = torch.full_like(p, 1e-3)
    layers = run.network.layers
    layers[0].weight.grad = tensors_at(1e21)[0][: layers[0].weight.shape[0], : layers[0].weight.shape[1]]
    layers[1].weight.grad = tensors_at(1e-25)[0][: layers[1].weight.shape[0], : layers[1].weight.shape[1]]
    return run, [layers[0].weight.grad, layers[1].weight.grad]


def test_a_gradient_of_1e21_and_one_of_1e_25_are_recorded_finite_and_exact(tmp_path):
    run, grads = huge_gradient_run(tmp_path)
    run.recorder.measure()
    run.recorder.record_step(0, torch.tensor(1.0), 0.1, None)
    record = run.recorder.flush()[0]
    assert run.recorder.divergence is None
    names = run.network.layer_names
    expected = float64_norms(grads).tolist()
    assert record.scalars[f"grad_norm/{names[0]}"] == pytest.approx(expected[0], rel=1e-5)
    assert record.scalars[f"grad_norm/{names[1]}"] == pytest.approx(expected[1], rel=1e-5)
    assert math.isfinite(record.scalars["grad_norm/total"])


def activation_rows() -> torch.Tensor:
    """Rows of 4096 float32 values the one-pass moments must get right or hand to the centred
    pass: ordinary ReLU outputs, a mean 1e6 times the spread (the variance cancels), values of
    1e25 (squares overflow float32) and 1e-25 (they underflow), all zeros, one value, a NaN and
    an infinity."""
    generator = torch.Generator().manual_seed(3)
    noise = torch.randn(8, 4096, generator=generator, dtype=torch.float64)
    rows = torch.stack(
        [
            noise[0].clamp_min(0),
            1e4 + 1e-2 * noise[1],
            1e25 * noise[2],
            1e-25 * noise[3],
            torch.zeros(4096, dtype=torch.float64),
            torch.zeros(4096, dtype=torch.float64).index_fill_(0, torch.tensor([7]), 2.5),
            noise[6].index_fill(0, torch.tensor([5]), math.nan),
            noise[7].index_fill(0, torch.tensor([9]), math.inf),
        ]
    )
    return rows.float()


def test_activation_mean_and_std_are_right_to_1e_4_on_every_kind_of_row():
    """One by one (float32 on the CPU), from the sums or from the caller's sums, and centred (a
    GPU's stack, or float64)."""
    rows = activation_rows()
    exact = rows.double()
    one_by_one = lambda sums=None: Rows(list(rows), Stacker(), "k").mean_std(sums)  # noqa: E731
    assert Rows(list(rows), Stacker(), "k").stacked is None
    given_sums = rows.sum(dim=1)  # as a ReLU's per-unit sums give them
    for mean, std in (one_by_one(), one_by_one(given_sums), _centred_mean_std(rows.clone())):
        assert mean.dtype == std.dtype == torch.float64
        torch.testing.assert_close(mean[:6], exact.mean(dim=1)[:6], rtol=1e-6, atol=0)
        torch.testing.assert_close(std[:6], exact.std(dim=1)[:6], rtol=1e-4, atol=0)
        assert math.isnan(mean[6]) and math.isnan(std[6])
        assert mean[7] == math.inf and not math.isfinite(std[7])
    half = rows[:1].bfloat16()
    stacked = Rows(list(half), Stacker(), "k")
    assert stacked.stacked is not None  # half precision is stacked and read as float32
    assert stacked.mean_std()[1].item() == pytest.approx(half.double().std().item(), rel=1e-4)


def test_per_unit_reductions_are_over_the_batch_one_by_one_and_stacked():
    """A row per tensor, of its units: the entries past the batch dimension (one for a tensor of
    one value per example)."""
    for shape in ((16, 3, 5), (16,)):
        tensors = [torch.randn(*shape, generator=torch.Generator().manual_seed(i)) for i in range(4)]
        for rows in (Rows(tensors, Stacker(), "k"), Rows([t.double() for t in tensors], Stacker(), "k")):
            for how in ("amax", "sum"):
                expected = torch.stack([getattr(t, how)(dim=0) for t in tensors]).reshape(4, -1)
                torch.testing.assert_close(rows.per_unit(how).float(), expected)


def test_clipping_a_gradient_of_1e21_brings_it_to_max_norm_not_to_zero(tmp_path):
    """torch's float32 total would be infinite, and max_norm / inf would zero the gradient."""
    run, _ = huge_gradient_run(tmp_path, "trainer.clip.max_norm=1.0")
    run.recorder.measure()
    clipped = clip_gradients(run.recorder.params, run.recorder.total_norm(), run.config.trainer.clip)
    assert clipped.item() == pytest.approx(1.0, rel=1e-4)


def test_a_genuine_nan_is_still_a_divergence_at_its_step_with_its_first_layer(tmp_path):
    run, _ = huge_gradient_run(tmp_path)
    second = run.network.layers[1]
    second.weight.grad[0, 0] = math.nan
    run.recorder.measure()
    run.recorder.record_step(0, torch.tensor(1.0), 0.1, None)
    run.recorder.flush()
    divergence = run.recorder.divergence
    assert divergence is not None and divergence.step == 0
    assert divergence.first_nonfinite_layer == second.name  # the first layer is finite: 1e21


def test_deep_linear_product_runs_to_its_end_and_shows_growth_of_1e24(tmp_path):
    """The preset whose float32 squares used to overflow at step 0 completes, every norm finite:
    the activations' spread grows to about 1e24 at the output and the signal to about 1e23 at
    the input, with every weight gradient near 1e25."""
    s = train(make_config("experiment=deep_linear_product", tiny=False), tmp_path, show_progress=False)
    assert s["status"] == "completed" and s["steps_completed"] == 2 and s["diverged_step"] is None
    hidden = s["layers"][:-1]
    stds = [s["act_std_first"][n] for n in hidden]
    signal = [s["grad_signal_first"][n] for n in hidden]
    grads = [s["grad_norm_first"][n] for n in s["layers"]] + [s["grad_norm_last"][n] for n in s["layers"]]
    assert stds[-1] > 1e22 and stds[-1] > 1e20 * stds[0]
    assert signal[0] > 1e21 and signal[0] > 1e20 * signal[-1]
    assert all(1e22 < g < 1e28 for g in grads)
    scalars = read_scalars(tmp_path)
    assert all(math.isfinite(v) for tag, series in scalars.items() for v in series.values())
