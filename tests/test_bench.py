"""The benchmark: its statistics helpers, its argument checks, and one --quick run end to end.

No absolute timing thresholds: the machine is shared, so the --quick run is checked for shape and
sanity (every section present, every figure positive, a verdict for every target), and the two
measurements underneath are checked on known workloads: RSS on a 256 MiB allocation, the timer
on sleeps (lower bounds and a ratio, never an upper bound in seconds).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from locseg import bench
from locseg.benchmark.core import DEMO
from locseg.benchmark.efficiency import Variant, count_flops, step_row
from locseg.benchmark.timing import timed
from locseg.benchmark.training import training_row


def test_paired_ratios_divide_element_wise_and_refuse_unpaired_lists():
    assert bench.paired_ratios([2.0, 9.0], [1.0, 3.0]) == [2.0, 3.0]
    with pytest.raises(ValueError, match="got 2 and 1"):
        bench.paired_ratios([1.0, 2.0], [1.0])


def test_median_interval_uses_binomial_order_statistics():
    # n = 20: the 95% interval for the median runs from the 6th to the 15th value (textbook).
    assert bench.median_interval([float(v) for v in range(20, 0, -1)]) == (6.0, 15.0, True)
    # n = 5 cannot reach 95% (2 / 2**5 > 5%): the full range, flagged as such.
    assert bench.median_interval([3.0, 1.0, 2.0, 5.0, 4.0]) == (1.0, 5.0, False)


def test_row_keeps_a_reason_only_when_its_target_is_missed():
    missed = bench.Row("training", "x", ratio=0.9, target=0.95).explain("too slow")
    met = bench.Row("training", "x", ratio=1.0, target=0.95).explain("too slow")
    info = bench.Row("inference", "x", ratio=1.3)
    assert (missed.passed, missed.reason) == (False, "too slow")
    assert (met.passed, met.reason) == (True, "")
    assert info.passed is None and info.as_dict()["passed"] is None


@pytest.mark.parametrize(("drop_last", "n_batches", "expected"), [(False, 3, 10), (True, 3, 8)])
def test_epoch_images_count_a_short_last_batch_only_if_kept(drop_last, n_batches, expected):
    loader = DataLoader(list(range(10)), batch_size=4, drop_last=drop_last)
    assert bench.epoch_images(loader, n_batches) == expected
    assert bench.epoch_images(loader, 1) == 4


def test_rotations_put_every_variant_first_once():
    orders = list(bench.rotations(["a", "b", "c"], 3))
    assert [order[0] for order in orders] == ["a", "b", "c"]
    assert all(sorted(order) == ["a", "b", "c"] for order in orders)


@pytest.mark.parametrize(
    ("fixed_ms", "predicted", "cause"),
    [
        (10.0, 0.909, "the per-step hooks weigh on a model this small"),
        (1.0, 0.990, "the rest of the gap (10.00 ms/step added here) is not that fixed cost"),
    ],
)
def test_training_row_sets_the_ratio_beside_what_the_fixed_cost_predicts(
    fixed_ms, predicted, cause
):
    # 10 batches/epoch: a 100 ms bare step, Lightning 10 ms/step slower -> ratio 1/1.1.
    seconds = {"lightning": [1.1] * 5, "bare": [1.0] * 5}
    trivial = {"trivial_lightning_ms": fixed_ms + 0.1, "trivial_bare_ms": 0.1, "fixed_ms": fixed_ms}
    row = training_row("localize", seconds, 80, 10, None, trivial)
    assert row.ratio == pytest.approx(1 / 1.1) and row.passed is False
    assert row.values["bare_step_ms"] == pytest.approx(100.0)
    assert row.values["predicted_ratio"] == pytest.approx(predicted, abs=5e-4)
    assert f"is {fixed_ms:.2f} ms per step" in row.reason
    assert f"predicts {predicted:.3f}" in row.reason
    assert cause in row.reason


@pytest.mark.parametrize("input_grad", [False, True])
def test_flops_of_a_linear_step_follow_the_formula(input_grad):
    """2 * batch * in * out for the forward; the backward twice that (input and weight
    gradients), or once for a first layer, whose input needs no gradient."""
    batch, n_in, n_out = 4, 5, 3
    layer = torch.nn.Linear(n_in, n_out)
    x = torch.rand(batch, n_in, requires_grad=input_grad)
    flops = count_flops(lambda: layer(x).sum())
    forward = 2 * batch * n_in * n_out  # the bias add is not counted
    assert flops == {"forward": forward, "backward": (2 if input_grad else 1) * forward}
    assert layer.weight.grad is not None  # the backward ran


@pytest.mark.parametrize("input_grad", [False, True])
def test_flops_of_a_conv_step_follow_the_formula(input_grad):
    batch, c_in, c_out, side, k = 2, 3, 4, 6, 3
    layer = torch.nn.Conv2d(c_in, c_out, k, padding=1, bias=False)
    x = torch.rand(batch, c_in, side, side, requires_grad=input_grad)
    flops = count_flops(lambda: layer(x).sum())
    forward = 2 * batch * c_out * side * side * c_in * k * k
    assert flops == {"forward": forward, "backward": (2 if input_grad else 1) * forward}

    def forward_only() -> None:  # what the peak's kernels return: nothing to differentiate
        layer(x)

    assert count_flops(forward_only) == {"forward": forward, "backward": 0}


def test_step_row_divides_achieved_by_the_better_kernel_round_by_round():
    variant = Variant(DEMO, channels_last=True, default=False)
    flops = {"forward": 10**9, "backward": 2 * 10**9}
    kernels = {"matmul": [100.0, 50.0, 100.0], "conv": [200.0, 100.0, 150.0]}
    peak = [200.0, 100.0, 150.0]
    row = step_row(
        variant,
        flops,
        [20.0, 10.0, 30.0],
        [8.0, 4.0, 12.0],
        kernels,
        peak,
        baseline=(8, [4.0, 2.0, 12.0]),
    )
    assert row.ratio == pytest.approx(0.1)  # median of 0.1, 0.1, 0.2
    assert row.values["fraction_of_matmul"] == pytest.approx(0.2)
    assert row.values["fraction_of_conv"] == pytest.approx(0.1)
    assert row.values["gflop_per_step"] == pytest.approx(3.0)
    assert row.values["speedup"] == pytest.approx(2.0)  # median of 2, 2, 1
    assert "channels_last" in row.name and row.note.startswith("not the default")


def test_threads_follow_an_explicit_request():
    assert bench.choose_threads(3, torch.device("cpu")) == (3, "--threads")


def test_peak_rss_is_at_least_the_current_rss():
    current = bench.rss_mib()  # read first: the process may grow between the two reads
    assert bench.peak_rss_mib() >= current > 0


MEASURE_ALLOCATION = """
import json, numpy as np
from locseg.benchmark.system import peak_rss_mib, rss_mib
before, peak_before = rss_mib(), peak_rss_mib()
block = np.ones(256 * 2**20, np.uint8)  # 256 MiB, every page written
during = rss_mib()
del block
print(json.dumps({"before": before, "peak_before": peak_before, "during": during,
                  "after": rss_mib(), "peak_after": peak_rss_mib()}))
"""


def test_rss_measures_a_known_allocation():
    """A fresh interpreter allocates and frees 256 MiB: RSS rises by it and falls back; the peak
    keeps it. Differences of one process's own readings, so other processes do not matter."""
    done = subprocess.run(
        [sys.executable, "-c", MEASURE_ALLOCATION], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    mib = json.loads(done.stdout.strip().splitlines()[-1])
    assert mib["during"] - mib["before"] == pytest.approx(256, abs=16), mib
    assert mib["after"] - mib["before"] < 32, mib  # freed: a large block goes back to the system
    assert mib["peak_after"] - mib["peak_before"] == pytest.approx(256, abs=16), mib


def test_timed_measures_a_known_sleep():
    """Sleeps of 0.1 s and 0.3 s: each at least its length (sleep never returns early), and
    their ratio near 3 (a shared machine adds milliseconds, never a factor)."""
    cpu = torch.device("cpu")
    short = timed(lambda: time.sleep(0.1), cpu)
    long = timed(lambda: time.sleep(0.3), cpu)
    assert short >= 0.1 and long >= 0.3
    assert long / short == pytest.approx(3.0, rel=0.25), (short, long)


def test_an_image_size_the_unet_cannot_pool_is_refused_with_the_fix(capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--image-size", "60"])
    assert exit_info.value.code == 2
    assert "--image-size: input_size=60 must be a positive multiple of 2**depth=8" in (
        capsys.readouterr().err
    )


def numbers(values: dict) -> list[float]:
    return [v for v in values.values() if isinstance(v, int | float) and not isinstance(v, bool)]


def test_quick_run_writes_every_section_with_positive_figures(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "locseg.bench", "--quick", "--json", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())

    assert set(result["sections"]) == set(bench.SECTIONS)
    for section, rows in result["sections"].items():
        measured = [r for r in rows if numbers(r["values"])]
        assert measured, f"section {section} has no measured row"
        for row in measured:
            assert all(math.isfinite(v) and v > 0 for v in numbers(row["values"])), row
        for row in rows:
            assert numbers(row["values"]) or row["note"].startswith("n/a: "), row

    targets = result["targets"]
    assert sorted((t["section"], t["target"]) for t in targets) == [
        ("loader", 5.0),
        ("loader", 5.0),
        ("preprocessing", 20.0),
        ("training", 0.95),
        ("training", 0.95),
    ]
    for target in targets:
        assert target["ratio"] > 0 and isinstance(target["passed"], bool)
        assert target["passed"] == (target["ratio"] >= target["target"])
        assert bool(target["reason"]) == (not target["passed"])

    inference = {r["name"] for r in result["sections"]["inference"]}
    for scale in ("demo 32 px", "paper 64 px"):
        assert {f"{scale}: channels_last / eager", f"{scale}: torch.compile / eager"} <= inference
    memory = result["sections"]["memory"]
    assert [r["values"]["peak_rss_mib"] >= r["values"]["before_fit_rss_mib"] for r in memory] == [
        True,
        True,
    ]
    for row in result["sections"]["training"]:  # the measured ratio beside the predicted one
        assert 0 < row["values"]["predicted_ratio"] <= 1, row
        assert "Lightning's fixed cost" in row["note"], row
    efficiency = {r["name"]: r for r in result["sections"]["efficiency"]}
    defaults = [r for r in efficiency.values() if r["name"].endswith("/ peak")]
    defaults = [r for r in defaults if "speedup" not in r["values"]]  # not the info variants
    assert [r["name"].split()[0] for r in defaults] == ["demo", "real"]
    for row in defaults:  # a training step's GFLOP/s over the measured peak
        assert 0 < row["ratio"] <= 1.5, row
        assert row["values"]["achieved_gflop_s"] < 1.5 * row["values"]["peak_gflop_s"], row
    assert sum(name.startswith("peak: ") for name in efficiency) == 2
    assert "/ peak" in done.stdout and "GFLOP/s" in done.stdout
    assert result["meta"]["quick"] is True and result["meta"]["threads"] >= 1
    verdicts = done.stdout.count("PASS") + done.stdout.count("MISS")
    assert verdicts == len(targets), done.stdout
    assert not list(Path(tmp_path).glob("lightning_logs")), "the bench left Lightning logs behind"
