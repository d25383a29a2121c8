"""The overhead benchmark still runs and prints a ratio for each variant (its figures are read
by a person, never asserted: timing on a shared machine is noise)."""

import re
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = [
    "bare PyTorch loop",
    "gradexp defaults (norms every 10, diagnostics every 50)",
    "gradexp defaults without the end-of-run figures",
    "floor: the bare loop reading every gradient once",
    "gradexp, every layer's norm every step, no diagnostics",
    "gradexp, every signal every step, histograms every 10",
    "gradexp, diagnostics=full (histograms every step too)",
]
BARE, FLOOR, EVERY_LAYER = VARIANTS[0], VARIANTS[3], VARIANTS[4]
# name, median time, median ratio, fastest ratio, per-step ratio, flushes per pass x mean cost
ROW = r"^  (\S.*?) +\d+\.\d+ s +(\d+\.\d+)x +(\d+\.\d+)x +(\d+\.\d+)x +(-|\d+ x \d+\.\d+ ms) +\d"


def run_benchmark(script: str, *args: str, timeout: int = 300) -> str:
    """A benchmark script's output, run as a user would; it must exit 0."""
    result = subprocess.run(
        [sys.executable, f"benchmarks/{script}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def run_overhead(*args: str) -> str:
    tiny = ["--steps", "5", "--repeats", "1", "--width", "8", "--fixed-repeats", "2"]
    return run_benchmark("overhead.py", *tiny, *args)


def assert_a_table(stdout: str, title: str, variants: list[str] = VARIANTS) -> None:
    """One table: a row per variant, each gradexp variant with its flushes, and the lines under it."""
    assert re.search(rf"^{re.escape(title)}, batch \d+, 5 steps", stdout, re.M), stdout
    rows = re.findall(ROW, stdout, re.M)
    assert [name for name, *_ in rows] == variants, stdout
    assert [flushes == "-" for *_, flushes in rows] == [name in (BARE, FLOOR) for name in variants]
    assert re.search(
        r"^per step: 5 recorded steps, each followed by two bare ones .* without the flush inside it, "
        r"plus what the first bare step took more than the second; fixed costs not\.$",
        stdout,
        re.M,
    )
    assert re.search(
        r"^left to the next step \(of a bare step, counted in\): defaults [+-]\d+\.\d%", stdout, re.M
    )
    floor = re.search(
        r"^every layer's norm above its floor \(.*\): ([+-]\d+\.\d)% of a bare step\.$", stdout, re.M
    )
    assert floor, stdout
    per_step = {name: float(step) for name, _, _, step, _ in rows}
    above = 100 * (per_step[EVERY_LAYER] - per_step[FLOOR])
    assert abs(above - float(floor.group(1))) <= 0.11, stdout  # the two ratios are rounded
    assert re.search(
        r"^flushes: timed apart and added back, .*: \d+ per pass, \d+\.\d+ ms each\.$", stdout, re.M
    )
    assert re.search(r"^fixed cost of a run .*: the defaults' -?\d+ ms, -?\d+ ms of it", stdout, re.M)
    assert re.search(r"^so a 5-step run of the defaults: \d+\.\d+x", stdout, re.M)


def test_overhead_benchmark_prints_a_ratio_per_variant():
    stdout = run_overhead("--model", "mlp", "--depth", "2")
    assert_a_table(stdout, "MLP depth 2 width 8")


def test_overhead_benchmark_on_a_custom_model_prints_a_ratio_per_variant():
    stdout = run_overhead("--model", "custom", "--custom-depth", "2")
    assert_a_table(stdout, "custom model custom_model.ResidualTower depth 2 width 8")


def test_overhead_benchmark_on_the_resnet_and_the_transformer_prints_a_ratio_per_variant():
    """The norm row alone (--variants): every variant of both took a sixth of the suite's time."""
    norm = ["--variants", "norm every step"]
    stdout = run_overhead("--model", "resnet", "--cnn-depth", "2", *norm)
    assert_a_table(stdout, "ResNet depth 2 channels 16, 16x16 images", VARIANTS[:5])
    stdout = run_overhead("--model", "transformer", "--transformer-depth", "1", *norm)
    assert_a_table(stdout, "Pre-LN Transformer depth 1 d_model 64, 32 tokens", VARIANTS[:5])


def test_the_custom_model_is_a_pre_ln_residual_tower():
    """What model=custom builds in the benchmark, checked apart from gradexp."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from custom_model import Block, ResidualTower
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    model = ResidualTower(input_shape=(3, 4), d_out=5, width=16, depth=3)
    assert len(model.blocks) == 3 and all(type(b) is Block for b in model.blocks)
    assert model(torch.randn(7, 3, 4)).shape == (7, 5)


def test_sweep_benchmark_prints_per_job_overhead_and_joblib_speed_up():
    stdout = run_benchmark("sweep_overhead.py", "--jobs", "4", "--steps", "5", "--repeats", "1")
    assert re.search(r"sweep overhead per job over the plain loop: +-?\d+\.\d+ s", stdout)
    n = r"-?\d+\.\d+"
    assert re.search(rf"paid once: +{n} s\n +of it, a PyTorch script's own start: +{n} s", stdout)
    assert re.search(rf"joblib speed-up, 4 jobs as a whole: +{n}x", stdout)
    assert re.search(rf"joblib speed-up per job: +{n}x +\({n} s a job, against {n} s\)", stdout)
    inside = re.search(
        rf"per job, inside the sweeps: +({n})x +\(({n}) s a job, against ({n}) s: jobs 3 to 4", stdout
    )
    assert inside, stdout  # the rate from the jobs' own ends in each 4-job sweep
    ratio, basic, joblib = (float(inside.group(i)) for i in (1, 2, 3))
    assert basic > 0 and joblib > 0 and abs(ratio - basic / joblib) < 0.03 * ratio + 0.01


def test_sweep_inside_benchmark_prints_each_part_of_a_jobs_cost_and_their_sum():
    stdout = run_benchmark("sweep_inside.py", "--jobs", "4", "--steps", "5", "--repeats", "1")
    n = r"-?\d+\.\d+"
    parts = [
        "the job \\(train\\) beyond its plain loop",
        "run_job around train \\(Hydra's, the job line\\)",
        "the job's config",
        "its share of the sweep's end",
    ]
    values = []
    for part in parts:
        found = re.search(rf"^  {part}: *({n}) s", stdout, re.M)
        assert found, (part, stdout)
        values.append(float(found.group(1)))
    assert re.search(rf"the table and figures: {n} s for 4 jobs, {n} s for 2\)", stdout), stdout
    total = float(re.search(rf"^  per job in all: +({n}) s", stdout, re.M).group(1))
    assert abs(total - sum(values)) < 0.003, stdout  # the sum of the parts as printed
    assert values[2] > 0  # the config was composed, and timed, for each job


def test_overhead_benchmark_in_fp16_prints_a_table_against_a_bare_fp16_loop():
    """With --variants, the bare loop, the defaults and the variants named: the norm row, and with
    it its floor."""
    stdout = run_overhead(
        "--model", "mlp", "--depth", "2", "--precision", "fp16", "--variants", "norm every step"
    )
    assert_a_table(stdout, "MLP depth 2 width 8, fp16 autocast with a dynamic loss scale", VARIANTS[:5])


def test_norms_benchmark_prints_each_case_against_the_plain_norm():
    stdout = run_benchmark("norms.py", "--depth", "2", "--width", "8", "--repeats", "10", timeout=120)
    rows = re.findall(r"^  (\S.*?) +\d+\.\d+ us +(\d+\.\d+)x$", stdout, re.M)
    assert len(rows) == 4 and rows[0][1] == "1.00", stdout
