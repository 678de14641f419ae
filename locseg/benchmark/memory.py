"""(5) Peak RSS of a short training run, each scale in a fresh interpreter so peaks do not mix."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import torch

from locseg.benchmark.core import Row, Scale, Settings
from locseg.benchmark.system import peak_rss_mib, rss_mib, silence_lightning
from locseg.benchmark.workload import make_datamodule, make_module, make_trainer

MEMORY_CHILD_TIMEOUT_S = 1800


def memory_spec(scale: Scale, root: Path, settings: Settings) -> dict:
    batch = settings.paper_batch() if scale.name == "paper" else scale.batch_size
    return {
        "scale": asdict(scale),
        "batch_size": batch,
        "steps": 2,
        "root": str(root),
        "workdir": str(settings.workdir),
        "device": str(settings.device),
        "threads": settings.threads,
    }


def memory_child(spec: dict) -> dict:
    """A short segmentation training run (the larger model); reports its own peak RSS."""
    silence_lightning()
    device = torch.device(spec["device"])
    if device.type == "cpu":
        torch.set_num_threads(spec["threads"])
    settings = child_settings(spec, device)
    scale = Scale(**spec["scale"])
    datamodule = make_datamodule("segment", Path(spec["root"]), scale, settings, spec["batch_size"])
    module = make_module("segment", scale)
    before = rss_mib()
    trainer = make_trainer(settings, [], "32-true", max_epochs=1, limit_train_batches=spec["steps"])
    trainer.fit(module, train_dataloaders=datamodule.train_dataloader())
    result = {"peak_rss_mib": peak_rss_mib(), "before_fit_rss_mib": before}
    if device.type == "cuda":
        result["cuda_peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return result


def child_settings(spec: dict, device: torch.device) -> Settings:
    scale = Scale(**spec["scale"])
    return Settings(
        device=device,
        demo=scale,
        paper=scale,
        batches=spec["steps"],
        repeats=1,
        epochs=1,
        compile="none",
        threads=spec["threads"],
        quick=False,
        dataset={},
        workdir=Path(spec["workdir"]),
    )


def bench_memory(scales: tuple[Scale, ...], root: Path, settings: Settings) -> list[Row]:
    """Run :func:`memory_child` per scale, each in a fresh interpreter so that no other section's
    memory counts; side by side, since each only reports its own peak (and imports take long)."""
    started = []
    for scale in scales:
        spec = memory_spec(scale, root, settings)
        make_datamodule("segment", root, scale, settings, spec["batch_size"])  # cache built here
        command = [sys.executable, "-m", "locseg.bench", "--memory-child", json.dumps(spec)]
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started.append((scale, spec, child))
    return [memory_row(scale, spec, child) for scale, spec, child in started]


def memory_row(scale: Scale, spec: dict, child: subprocess.Popen) -> Row:
    """Wait for one memory child and turn its JSON line into a row (n/a with its error)."""
    name = f"{scale.name} {scale.image_size} px: training peak RSS"
    try:
        out, err = child.communicate(timeout=MEMORY_CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        return Row("memory", name, note=f"n/a: no result within {MEMORY_CHILD_TIMEOUT_S} s")
    lines = out.strip().splitlines()
    if child.returncode != 0 or not lines:
        last = err.strip().splitlines()[-1] if err.strip() else f"exit {child.returncode}"
        return Row("memory", name, note=f"n/a: child failed: {last[:100]}")
    result = json.loads(lines[-1])
    cuda = f", CUDA peak {result['cuda_peak_mib']:.0f} MiB" if "cuda_peak_mib" in result else ""
    return Row(
        "memory",
        name,
        values=result,
        detail=f"{result['peak_rss_mib']:.0f} MiB",
        note=(
            f"batch {spec['batch_size']}, {spec['steps']} steps; "
            f"{result['before_fit_rss_mib']:.0f} MiB before fit{cuda}"
        ),
    )
