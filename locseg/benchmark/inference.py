"""(4) Inference images/s of the U-Net's forward variants, each against eager mode."""

from __future__ import annotations

import copy
import statistics
from collections.abc import Callable

import torch

from locseg.benchmark.core import Row, Scale, Settings, console
from locseg.benchmark.timing import paired_ratios, rotations, spread, timed
from locseg.benchmark.workload import autocast, make_module


def compile_policy(scale: Scale, settings: Settings) -> str | None:
    """None when torch.compile should be tried, else why not."""
    if settings.compile == "none":
        return "skipped (--compile none)" if not settings.quick else "skipped in --quick"
    if settings.compile == "auto" and not settings.cuda and scale.name == "paper":
        return "skipped on CPU (minutes of compiling; --compile all to include)"
    return None


def try_compile(module, image: torch.Tensor, device: torch.device):
    """A compiled copy and its compile seconds, or None and the reason it failed."""
    try:
        compiled = torch.compile(copy.deepcopy(module))
        with torch.inference_mode():
            seconds = timed(lambda: compiled(image), device)
        return compiled, seconds, ""
    except Exception as error:  # a backend may be missing (no C++ compiler, old GPU, ...)
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return None, 0.0, f"{type(error).__name__}: {first[:80]}"


def inference_variants(scale: Scale, batch: int, settings: Settings):
    """name -> zero-argument forward pass, plus rows for variants that could not run."""
    device = settings.device
    module = make_module("segment", scale).to(device).eval()
    image = torch.rand(batch, 1, scale.image_size, scale.image_size, device=device)
    channels_last = copy.deepcopy(module).to(memory_format=torch.channels_last)
    image_cl = image.contiguous(memory_format=torch.channels_last)

    def infer(model, x, dtype=None) -> Callable[[], None]:
        def run() -> None:
            with torch.inference_mode(), autocast(device, dtype):
                model(x)

        return run

    variants = {
        "eager": infer(module, image),
        "eager, autograd on": lambda: module(image),
        "channels_last": infer(channels_last, image_cl),
    }
    if settings.cuda:
        variants["bf16 autocast"] = infer(module, image, torch.bfloat16)
        variants["bf16 + channels_last"] = infer(channels_last, image_cl, torch.bfloat16)
    extra: dict[str, dict] = {}
    skip = compile_policy(scale, settings)
    if skip is None:
        console.print(f"[dim]  compiling the {scale.name} U-Net...[/]")
        compiled, seconds, failure = try_compile(module, image, device)
        if compiled is None:
            skip = f"failed: {failure}"
        else:
            variants["torch.compile"] = infer(compiled, image)
            extra["torch.compile"] = {"compile_s": seconds}
    return variants, extra, skip


def bench_inference(scale: Scale, settings: Settings) -> list[Row]:
    """Images/s of each forward variant, rounds rotated; ratios are pairwise vs eager."""
    paper_on_cpu = scale.name == "paper" and not settings.cuda
    batch = settings.paper_batch() if scale.name == "paper" else scale.batch_size
    n_batches = 1 if paper_on_cpu else settings.batches
    repeats = min(settings.repeats, 2) if paper_on_cpu else settings.repeats
    variants, extra, skip = inference_variants(scale, batch, settings)

    def run(fn: Callable[[], None]) -> Callable[[], None]:
        return lambda: [fn() for _ in range(n_batches)]

    for fn in variants.values():  # warm-up
        fn()
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for order in rotations(list(variants), repeats):
        for name in order:
            seconds[name].append(timed(run(variants[name]), settings.device))
    images = batch * n_batches
    where = f"{scale.name} {scale.image_size} px"
    rows = []
    for name, times in seconds.items():
        ratios = paired_ratios(seconds["eager"], times)
        ips = images / statistics.median(times)
        values = {"img_s": ips, **extra.get(name, {})}
        compile_note = f", compiled in {values['compile_s']:.0f} s" if "compile_s" in values else ""
        rows.append(
            Row(
                "inference",
                f"{where}: {name} / eager" if name != "eager" else f"{where}: eager (baseline)",
                ratio=statistics.median(ratios),
                values=values,
                detail=f"{ips:.1f} img/s",
                note=f"batch {batch} x {n_batches}{compile_note}, {spread(ratios)}",
            )
        )
    if skip is not None:
        rows.append(Row("inference", f"{where}: torch.compile / eager", note=f"n/a: {skip}"))
    return rows
