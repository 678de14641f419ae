"""(6) Training throughput against the limit: a step's FLOP/s as a fraction of the measured peak.

The FLOPs of one training step (forward + backward) are counted by
``torch.utils.flop_counter.FlopCounterMode``, which counts matrix multiplications and
convolutions only (batch-norm, ReLU, pooling, the loss and the optimizer are free by its
convention, though they take time). Times steps per second, that is the achieved GFLOP/s. The
peak is measured in the same run, on the same threads: a dense fp32 matmul and a dense 3x3
convolution at the real recipe's widest level (its bottleneck), each the best of a few calls.
Every round measures all of them, in rotated order, so each fraction is the ratio of two
measurements a second apart; the row shows its median and interval over the rounds. The peak
is a best-of and the step a median, so on a contended machine the fraction reads low: with
other jobs holding the 2 cores (load 8.6), the same steps measured half the fraction they did
minutes later (load 6.7), the peak kernels within 10%.

Besides the two training defaults (demo and real recipe, NCHW, batch 8), the same step in
channels_last, at batch 8 and 32: info rows, changes the training does not make (channels_last
picks other convolution kernels, so its numbers are not bit-identical). Batch 32 alone, NCHW, is
left out: on 1 thread it moved neither step clearly (demo x1.22, 95% CI 1.00-1.40; real x0.94).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from locseg.benchmark.core import QUICK_REAL, REAL, Row, Scale, Settings
from locseg.benchmark.timing import median_interval, paired_ratios, rotations, spread, timed
from locseg.benchmark.workload import bare_loss, make_module, make_step

PEAK_CALLS = 3  # a peak is what the kernel can do: the best of this many calls per round
STEP_IMAGES = 16  # images per timed measurement of a step (two steps of 8, one of 32)
LARGE_BATCH = 32


@dataclass(frozen=True)
class Variant:
    """One training step to time: a scale, and whether the model and batch are channels_last."""

    scale: Scale
    channels_last: bool = False
    default: bool = True  # the step training runs (else an info row: a change it does not make)

    @property
    def label(self) -> str:
        s = self.scale
        layout = "channels_last" if self.channels_last else "NCHW"
        return f"{s.name} step ({s.image_size} px, width {s.width}, batch {s.batch_size}, {layout})"


def count_flops(fn: Callable[[], torch.Tensor | None]) -> dict[str, int]:
    """FLOPs of ``fn()`` and, when it returns a tensor, of ``backward()`` on it, as
    ``FlopCounterMode`` counts them: 2 per multiply-add of a matmul or convolution. A layer's
    backward costs twice its forward (input and weight gradients), or once where its input
    needs no gradient (the first layer)."""
    with FlopCounterMode(display=False) as counter:
        out = fn()
        forward = counter.get_total_flops()
        if out is not None:
            out.backward()
    return {"forward": forward, "backward": counter.get_total_flops() - forward}


def segment_batch(scale: Scale, device: torch.device, channels_last: bool = False) -> dict:
    """A fixed batch of random images and masks, already on the device (no loading timed)."""
    generator = torch.Generator().manual_seed(0)
    shape = (scale.batch_size, 1, scale.image_size, scale.image_size)
    batch = {
        "image": torch.rand(shape, generator=generator),
        "mask": (torch.rand(shape, generator=generator) > 0.5).float(),
    }
    layout = torch.channels_last if channels_last else torch.contiguous_format
    return {k: v.to(device).contiguous(memory_format=layout) for k, v in batch.items()}


def training_step(variant: Variant, device: torch.device) -> tuple[Callable[[], None], dict]:
    """The bare segmentation step of (1), on a fixed batch, and its counted FLOPs."""
    module = make_module("segment", variant.scale).to(device).train()
    if variant.channels_last:
        module = module.to(memory_format=torch.channels_last)
    batch = segment_batch(variant.scale, device, variant.channels_last)
    flops = count_flops(lambda: bare_loss("segment", module, batch))
    module.zero_grad(set_to_none=True)
    step = make_step("segment", module, module.configure_optimizers(), device)
    return (lambda: step(batch)), flops


def dense_kernels(settings: Settings, widest: Scale) -> dict[str, tuple[str, Callable, int]]:
    """name -> (description, one call, its FLOPs): the dense fp32 kernels that set the peak."""
    device = settings.device
    generator = torch.Generator().manual_seed(0)
    n = 512 if settings.quick else 1024  # 2048 fell out of cache: 25% slower
    a, b = (torch.rand(n, n, generator=generator).to(device) for _ in range(2))
    channels, side = widest.width * 2**widest.depth, widest.image_size // 2**widest.depth
    x = torch.rand(widest.batch_size, channels, side, side, generator=generator).to(device)
    conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False).to(device).eval()

    def matmul() -> None:
        torch.mm(a, b)

    def convolve() -> None:
        with torch.inference_mode():
            conv(x)

    return {
        "matmul": (f"fp32 matmul {n}x{n}", matmul, count_flops(matmul)["forward"]),
        "conv": (
            f"fp32 3x3 conv {channels}->{channels} ch, {side}x{side}, batch {widest.batch_size} "
            f"({widest.name}'s bottleneck)",
            convolve,
            count_flops(convolve)["forward"],
        ),
    }


def variants(settings: Settings) -> list[Variant]:
    real = QUICK_REAL if settings.quick else REAL
    out = []
    for scale in (settings.demo, real):
        large = replace(scale, batch_size=LARGE_BATCH)
        out += [
            Variant(scale),
            Variant(scale, channels_last=True, default=False),
            Variant(large, channels_last=True, default=False),
        ]
    return out


def bench_efficiency(settings: Settings) -> list[Row]:
    """Rounds in rotated order: each kernel (best of ``PEAK_CALLS``) and each step variant."""
    device = settings.device
    real = QUICK_REAL if settings.quick else REAL
    kernels = dense_kernels(settings, real)
    steps = {v.label: (v, *training_step(v, device)) for v in variants(settings)}
    runs: dict[str, Callable[[], None]] = {}
    for name, (_, call, _) in kernels.items():
        runs[name] = call
    for label, (variant, step, _) in steps.items():
        n = max(1, STEP_IMAGES // variant.scale.batch_size)
        runs[label] = lambda step=step, n=n: [step() for _ in range(n)]
    for fn in runs.values():  # warm-up: kernel selection, allocator, optimizer state
        fn()
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for order in rotations(list(runs), settings.repeats):
        for name in order:
            if name in kernels:
                seconds[name].append(min(timed(runs[name], device) for _ in range(PEAK_CALLS)))
            else:
                seconds[name].append(timed(runs[name], device))
    gflop_s = {name: [kernels[name][2] / t / 1e9 for t in seconds[name]] for name in kernels}
    peak = [max(rates) for rates in zip(*gflop_s.values(), strict=True)]  # per round
    rows = [peak_row(kernels[name][0], rates, settings) for name, rates in gflop_s.items()]
    defaults: dict[str, tuple[int, list[float]]] = {}  # scale name -> (batch, img/s per round)
    for label, (variant, _, flops) in steps.items():
        n = max(1, STEP_IMAGES // variant.scale.batch_size)
        rates = [(flops["forward"] + flops["backward"]) * n / t / 1e9 for t in seconds[label]]
        img_s = [variant.scale.batch_size * n / t for t in seconds[label]]
        if variant.default:
            defaults[variant.scale.name] = (variant.scale.batch_size, img_s)
        baseline = None if variant.default else defaults[variant.scale.name]
        rows.append(step_row(variant, flops, rates, img_s, gflop_s, peak, baseline))
    return rows


def peak_row(description: str, rates: list[float], settings: Settings) -> Row:
    low, high, _ = median_interval(rates)
    median = statistics.median(rates)
    return Row(
        "efficiency",
        f"peak: {description}",
        values={"gflop_s": median, "best_gflop_s": max(rates)},
        detail=f"{median:.1f} GFLOP/s",
        note=(
            f"best of {PEAK_CALLS} calls per round, median of {len(rates)} rounds "
            f"({low:.1f}-{high:.1f}), threads={settings.threads}"
        ),
    )


def step_row(variant, flops, rates, img_s, kernels, peak, baseline=None) -> Row:
    """Achieved GFLOP/s over the round's peak (the better kernel), paired round by round; a
    variant (``baseline``: the default step's batch and img/s) also gets its speed-up."""
    fractions = paired_ratios(rates, peak)
    of_matmul = statistics.median(paired_ratios(rates, kernels["matmul"]))
    of_conv = statistics.median(paired_ratios(rates, kernels["conv"]))
    achieved, peak_median = statistics.median(rates), statistics.median(peak)
    total = flops["forward"] + flops["backward"]
    values = {
        "gflop_per_step": total / 1e9,
        "forward_gflop": flops["forward"] / 1e9,
        "backward_gflop": flops["backward"] / 1e9,
        "achieved_gflop_s": achieved,
        "peak_gflop_s": peak_median,
        "fraction_of_matmul": of_matmul,
        "fraction_of_conv": of_conv,
        "img_s": statistics.median(img_s),
    }
    shares = f"of matmul {of_matmul:.3f}, of conv {of_conv:.3f}; {spread(fractions)}"
    if baseline is None:
        note = (
            f"{total / 1e9:.2f} GFLOP/step (fwd {flops['forward'] / 1e9:.2f} + bwd "
            f"{flops['backward'] / 1e9:.2f}), {values['img_s']:.0f} img/s; {shares}"
        )
    else:
        baseline_batch, baseline_img_s = baseline
        speedup = paired_ratios(img_s, baseline_img_s)
        values["speedup"] = statistics.median(speedup)
        note = (
            f"not the default: img/s x{values['speedup']:.2f} the batch-{baseline_batch} NCHW "
            f"step ({spread(speedup)}); {shares}"
        )
    return Row(
        "efficiency",
        f"{variant.label} / peak",
        ratio=statistics.median(fractions),
        values=values,
        detail=f"{achieved:.1f} / {peak_median:.1f} GFLOP/s",
        note=note,
    )
