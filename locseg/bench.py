"""``python -m locseg.bench``: does locseg cost its users speed? One run, ratios against targets.

The machines this runs on are shared and noisy, so every comparison is a ratio of two measurements
interleaved in the same run (A, B, A, B, ...) and summarised by the median of the pairwise ratios;
the absolute figures stand beside the ratios for context only.

1. training images/s through the LightningModules + ``pl.Trainer`` vs a bare PyTorch loop over the
   same model, DataLoader, batch and optimizer, epoch by epoch in one fit (target >= 0.95; the
   first, warm-up epoch of each excluded);
2. DataLoader images/s (cached preprocessing + augmentation, the DataModule's default workers) vs
   training-step images/s (target >= 5: the loader is never the bottleneck);
3. preprocessing: first run (fresh cache) vs cached run (target >= 20);
4. inference images/s of the U-Net: eager, eager with autograd, channels_last, ``torch.compile``
   (and bf16 autocast on CUDA), at the demo and paper sizes;
5. peak RSS of a short training run at both sizes, each in its own process so peaks do not mix.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import itertools
import json
import logging
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

import locseg
from locseg.io import write_json_atomic

TRAIN_TARGET = 0.95
LOADER_TARGET = 5.0
PREPROCESS_TARGET = 20.0
SECTIONS = ("training", "loader", "preprocessing", "inference", "memory")
TARGET_KEY = {"localize": "center", "segment": "mask"}
MEMORY_CHILD_TIMEOUT_S = 1800

console = Console(stderr=True, highlight=False)


@dataclass(frozen=True)
class Scale:
    """A network and input size (mirrors conf/experiment/demo.yaml and paper.yaml)."""

    name: str
    image_size: int
    depth: int
    width: int
    batch_size: int

    def describe(self) -> str:
        return f"{self.image_size} px, depth {self.depth}, width {self.width}"


DEMO = Scale("demo", 64, 3, 8, 8)
PAPER = Scale("paper", 256, 4, 32, 16)
QUICK_DEMO = Scale("demo", 32, 3, 4, 4)
QUICK_PAPER = Scale("paper", 64, 4, 8, 4)
CPU_PAPER_BATCH = 4  # a 256 px step of batch 16 takes about a minute on 2 cores


@dataclass
class Settings:
    """Everything a section needs to know about the run."""

    device: torch.device
    demo: Scale
    paper: Scale
    batches: int
    repeats: int
    epochs: int
    compile: str
    threads: int
    quick: bool
    dataset: dict
    workdir: Path = Path(".")

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def paper_batch(self) -> int:
        """The paper's batch on a GPU; a small one on CPU, where a 256 px step takes minutes."""
        return self.paper.batch_size if self.cuda else min(self.paper.batch_size, CPU_PAPER_BATCH)


@dataclass
class Row:
    """One line of the table: a ratio (with its target, if it has one) and the figures behind it."""

    section: str
    name: str
    ratio: float | None = None
    target: float | None = None
    values: dict[str, float] = field(default_factory=dict)
    detail: str = ""
    note: str = ""
    reason: str = ""

    @property
    def passed(self) -> bool | None:
        if self.target is None or self.ratio is None:
            return None
        return self.ratio >= self.target

    def explain(self, reason: str) -> Row:
        """Keep ``reason`` only when the target is missed: it says why, with the numbers."""
        self.reason = reason if self.passed is False else ""
        return self

    def as_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


# --------------------------------------------------------------------------- small helpers


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Wall seconds of ``fn()``, with the device's queue drained on both sides."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def paired_ratios(numerators: list[float], denominators: list[float]) -> list[float]:
    """Element-wise ratios of measurements taken back to back, so they share the machine's mood."""
    if not numerators or len(numerators) != len(denominators):
        raise ValueError(
            f"need equally many measurements on both sides, got {len(numerators)} and "
            f"{len(denominators)}"
        )
    return [a / b for a, b in zip(numerators, denominators, strict=True)]


def median_interval(values: list[float], level: float = 0.95) -> tuple[float, float, bool]:
    """Distribution-free interval for the median: order statistics x(k), x(n+1-k) with k from
    the binomial(n, 1/2) tails. Too few values for ``level`` give the full range (flag False)."""
    ordered, n = sorted(values), len(values)
    tail, cdf, k = (1 - level) / 2, 0.0, 0
    for j in range(n):
        cdf += math.comb(n, j) / 2**n
        if cdf > tail:
            break
        k = j + 1
    if k == 0:
        return ordered[0], ordered[-1], False
    return ordered[k - 1], ordered[n - k], True


def spread(ratios: list[float]) -> str:
    low, high, is_ci = median_interval(ratios)
    return f"{'95% CI' if is_ci else 'range'} {low:.2f}-{high:.2f} (n={len(ratios)})"


def epoch_images(loader: torch.utils.data.DataLoader, n_batches: int) -> int:
    """Images in the first ``n_batches`` batches of an (unshuffled-size) epoch."""
    total, size = len(loader.dataset), loader.batch_size
    sizes = [size] * (total // size)
    if total % size and not loader.drop_last:
        sizes.append(total % size)
    return sum(sizes[:n_batches])


def rotations(names: list[str], repeats: int) -> Iterator[list[str]]:
    """The variants in a different order each round, so none is always measured first."""
    for r in range(repeats):
        shift = r % len(names)
        yield names[shift:] + names[:shift]


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Hide progress bars (preprocessing) so the table stays readable."""
    with (
        open(os.devnull, "w") as sink,
        contextlib.redirect_stdout(sink),
        contextlib.redirect_stderr(sink),
    ):
        yield


def silence_lightning() -> None:
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
    warnings.filterwarnings("ignore", message=".*Tensor Cores.*")
    warnings.filterwarnings("ignore", message=".*no `val_dataloader`.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")


def proc_status_mib(field: str) -> float | None:
    """A memory field of /proc/self/status (Linux) in MiB, or None where there is none."""
    status = Path("/proc/self/status")
    if not status.is_file():
        return None
    for line in status.read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return None


def rss_mib() -> float:
    """Resident set size of this process now."""
    return proc_status_mib("VmRSS") or peak_rss_mib()


def peak_rss_mib() -> float:
    """Peak RSS of this process since it started its program.

    VmHWM first: ``ru_maxrss`` survives ``exec`` on Linux, so a child started by a large parent
    (fork or vfork) would report the parent's peak rather than its own.
    """
    hwm = proc_status_mib("VmHWM")
    if hwm is not None:
        return hwm
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def choose_threads(requested: int, device: torch.device) -> tuple[int, str]:
    """Intra-op threads for CPU runs: the request, else torch's default unless the CPU is busy.

    OpenMP threads spin at every barrier; when other processes hold the cores, a 2-thread
    convolution measured 25x slower than a 1-thread one on a shared 2-core machine.
    """
    default = torch.get_num_threads()
    if requested > 0:
        return requested, "--threads"
    if device.type != "cpu" or default == 1:
        return default, "torch default"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg()[0]
    if load + default > cores + 0.5:
        return 1, f"auto: load {load:.1f} on {cores} cores (OpenMP stalls when oversubscribed)"
    return default, "torch default"


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


# --------------------------------------------------------------------------- data and models


def make_dataset(settings: Settings) -> Path:
    """A synthetic dataset in the run's temporary folder (the embedded default data)."""
    from locseg.data.synthetic import generate_dataset

    return generate_dataset(settings.workdir / "synthetic", **settings.dataset, progress=False)


def make_datamodule(task: str, root: Path, scale: Scale, settings: Settings, batch_size=None):
    """The real DataModule at its defaults (workers, pinning), only size and batch set."""
    from locseg.data.datamodules import LocalizationDataModule, SegmentationDataModule

    cls = LocalizationDataModule if task == "localize" else SegmentationDataModule
    datamodule = cls(
        root=str(root),
        name="bench",
        image_size=scale.image_size,
        batch_size=batch_size or scale.batch_size,
        cache_dir=str(settings.workdir / "cache"),
    )
    with quiet():
        datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def make_module(task: str, scale: Scale, datamodule=None) -> pl.LightningModule:
    from locseg.models.localizer import LocalizerModule
    from locseg.models.segmenter import SegmenterModule

    torch.manual_seed(0)
    options = {"depth": scale.depth, "base_width": scale.width, "input_size": scale.image_size}
    if task == "localize":
        module = LocalizerModule(**options)
        if datamodule is not None:
            module.set_baseline_center(datamodule.mean_train_center())
        return module
    return SegmenterModule(**options)


def bare_loss(task: str, module: pl.LightningModule, batch: dict) -> torch.Tensor:
    """The loss of the module's ``training_step``, without its metric bookkeeping."""
    from locseg.models.losses import neg_log_dice_loss

    if task == "localize":
        return F.mse_loss(module(batch["image"]).float(), batch["center"].float())
    return neg_log_dice_loss(module(batch["image"]), batch["mask"], module.hparams.dice_smooth)


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def make_step(task: str, module, optimizer, device, dtype=None) -> Callable[[dict], None]:
    """One plain PyTorch training step: what a user would write without a framework."""
    key = TARGET_KEY[task]

    def step(batch: dict) -> None:
        image = batch["image"].to(device, non_blocking=True)
        target = batch[key].to(device, non_blocking=True)
        with autocast(device, dtype):
            loss = bare_loss(task, module, {"image": image, key: target})
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


# --------------------------------------------------------------------------- (1) training


class Interleaver(pl.Callback):
    """Alternates epochs: before each Lightning epoch, one epoch of the bare loop.

    Epoch k of each side runs within a second of the other, so a neighbour's burst of work slows
    both; separate runs tens of seconds apart compared the machine's moods, not the two loops. A
    Lightning epoch is timed from the end of the bare epoch in its start hook to the next start
    hook: its data fetching, every hook and the module's epoch-end logging are inside.
    """

    def __init__(self, bare_epoch: Callable[[], None], device: torch.device):
        self.bare_epoch, self.device = bare_epoch, device
        self.lightning: list[float] = []
        self.bare: list[float] = []
        self._start: float | None = None

    def _now(self) -> float:
        synchronize(self.device)
        return time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if self._start is not None:
            self.lightning.append(self._now() - self._start)
        with torch.enable_grad():
            self.bare.append(timed(self.bare_epoch, self.device))
        self._start = self._now()

    def on_train_end(self, trainer, pl_module) -> None:
        self.lightning.append(self._now() - self._start)


def make_trainer(settings: Settings, callbacks: list, precision: str, **limits) -> pl.Trainer:
    """A Trainer with nothing the comparison does not need: no logger, checkpoints or bar."""
    return pl.Trainer(
        accelerator="gpu" if settings.cuda else "cpu",
        devices=1,
        precision=precision,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        default_root_dir=str(settings.workdir / "trainer"),
        **limits,
    )


def bench_training(task: str, datamodule, settings: Settings, dtype=None) -> Row:
    """Lightning vs bare loop over the same DataLoader object, epochs alternating in one fit."""
    loader = datamodule.train_dataloader()
    n_batches = min(settings.batches, len(loader))
    images = epoch_images(loader, n_batches)
    base = make_module(task, settings.demo, datamodule)
    lit, bare = copy.deepcopy(base), copy.deepcopy(base).to(settings.device).train()
    step = make_step(task, bare, bare.configure_optimizers(), settings.device, dtype)

    def bare_epoch() -> None:
        for batch in itertools.islice(loader, n_batches):
            step(batch)

    clock = Interleaver(bare_epoch, settings.device)
    trainer = make_trainer(
        settings,
        [clock],
        "bf16-mixed" if dtype is torch.bfloat16 else "32-true",
        max_epochs=settings.epochs + 1,
        limit_train_batches=n_batches,
    )
    trainer.fit(lit, train_dataloaders=loader)
    threads = torch.get_num_threads()
    if settings.device.type == "cpu" and threads != settings.threads:
        raise RuntimeError(f"torch threads changed in the run ({settings.threads} -> {threads})")
    seconds = {"lightning": clock.lightning[1:], "bare": clock.bare[1:]}  # warm-up dropped
    return training_row(task, seconds, images, n_batches, dtype)


def training_row(task: str, seconds: dict, images: int, n_batches: int, dtype) -> Row:
    ratios = paired_ratios(seconds["bare"], seconds["lightning"])  # speed ratio = time inverse
    lit_s, bare_s = statistics.median(seconds["lightning"]), statistics.median(seconds["bare"])
    pairs = zip(seconds["lightning"], seconds["bare"], strict=True)
    overhead_ms = statistics.median(lit - bare for lit, bare in pairs) / n_batches * 1e3
    step_ms = bare_s / n_batches * 1e3
    low, high, is_ci = median_interval(ratios)
    noise = (
        f"; within this machine's noise (the 95% CI holds {TRAIN_TARGET})"
        if is_ci and high >= TRAIN_TARGET
        else ""
    )
    label = "bf16-mixed" if dtype is torch.bfloat16 else "fp32"
    row = Row(
        "training",
        f"{task}: Lightning / bare loop ({label})",
        ratio=statistics.median(ratios),
        target=TRAIN_TARGET,
        values={"lightning_img_s": images / lit_s, "bare_img_s": images / bare_s},
        detail=f"{images / lit_s:.1f} vs {images / bare_s:.1f} img/s",
        note=f"{n_batches} batches/epoch, {spread(ratios)}",
    )
    return row.explain(
        f"Lightning adds {overhead_ms:.1f} ms to a {step_ms:.1f} ms step "
        f"({overhead_ms / step_ms:.0%}): per-step hooks weigh on a small model{noise}"
    )


# --------------------------------------------------------------------------- (2) loader


def bench_loader(task: str, datamodule, settings: Settings) -> Row:
    """Loader alone vs training step alone on a batch already on the device, interleaved."""
    loader = datamodule.train_dataloader()
    n_batches = min(settings.batches, len(loader))
    images = epoch_images(loader, n_batches)
    module = make_module(task, settings.demo, datamodule).to(settings.device).train()
    step = make_step(task, module, module.configure_optimizers(), settings.device)
    fixed = {k: v.to(settings.device) for k, v in next(iter(loader)).items()}

    def load() -> None:
        for _ in itertools.islice(loader, n_batches):
            pass

    def train() -> None:
        for _ in range(n_batches):
            step(fixed)

    runs = {"loader": load, "step": train}
    for fn in runs.values():  # warm-up: worker start-up, allocator, kernels
        fn()
    seconds: dict[str, list[float]] = {"loader": [], "step": []}
    for order in rotations(list(runs), settings.repeats):
        for name in order:
            seconds[name].append(timed(runs[name], settings.device))
    ratios = paired_ratios(seconds["step"], seconds["loader"])
    loader_ips = images / statistics.median(seconds["loader"])
    step_ips = images / statistics.median(seconds["step"])
    workers = loader.num_workers
    row = Row(
        "loader",
        f"{task}: DataLoader / training step",
        ratio=statistics.median(ratios),
        target=LOADER_TARGET,
        values={"loader_img_s": loader_ips, "step_img_s": step_ips},
        detail=f"{loader_ips:.0f} vs {step_ips:.1f} img/s",
        note=f"num_workers={workers}, {spread(ratios)}",
    )
    return row.explain(
        f"the loader (num_workers={workers}) makes {loader_ips:.0f} img/s for a step taking "
        f"{step_ips:.0f} img/s: raise data.num_workers where cores are free"
    )


# --------------------------------------------------------------------------- (3) preprocessing


def bench_preprocessing(root: Path, settings: Settings) -> Row:
    """A fresh cache folder each round (cold) vs the same call again (cached), interleaved."""
    from locseg.data.dataset import load_dataset, read_image
    from locseg.data.preprocess import PreprocessConfig, preprocess_dataset

    dataset = load_dataset(root)
    config = PreprocessConfig(image_size=settings.demo.image_size)
    cpu = torch.device("cpu")
    cold, cached = [], []
    for r in range(settings.repeats):
        folder = settings.workdir / f"preprocess-{r}"

        def run(folder: Path = folder) -> None:
            preprocess_dataset(dataset, config, folder)

        with quiet():
            cold.append(timed(run, cpu))
        cached.append(statistics.median(timed(run, cpu) for _ in range(3)))
    ratios = paired_ratios(cold, cached)
    count = len(dataset.centred())
    native = read_image(dataset.centred()[0].image_path).shape
    cold_s, cached_s = statistics.median(cold), statistics.median(cached)
    row = Row(
        "preprocessing",
        f"cold / cached ({count} images, {native[1]}x{native[0]} -> {config.image_size} px)",
        ratio=statistics.median(ratios),
        target=PREPROCESS_TARGET,
        values={"cold_s": cold_s, "cached_s": cached_s, "cold_img_s": count / cold_s},
        detail=f"{cold_s:.2f} s vs {cached_s * 1e3:.1f} ms",
        note=spread(ratios),
    )
    return row.explain(
        f"the cached run still hashes {count} file stats and opens the arrays "
        f"({cached_s * 1e3:.0f} ms), while {native[1]} px images preprocess cheaply "
        f"({count / cold_s:.0f} img/s); real photographs are 5-20x larger"
    )


# --------------------------------------------------------------------------- (4) inference


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


# --------------------------------------------------------------------------- (5) memory


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


# --------------------------------------------------------------------------- the run


def run_all(settings: Settings) -> list[Row]:
    """Every section in order; progress goes to stderr, the table to stdout."""
    rows: list[Row] = []
    start = time.perf_counter()

    def progress(what: str) -> None:
        console.print(f"[dim]{time.perf_counter() - start:6.1f} s  {what}[/]")

    progress("drawing the synthetic dataset")
    root = make_dataset(settings)
    modules = {task: make_datamodule(task, root, settings.demo, settings) for task in TARGET_KEY}
    for task, datamodule in modules.items():
        progress(f"(1) training, {task}")
        rows.append(bench_training(task, datamodule, settings))
        if settings.cuda:
            rows.append(bench_training(task, datamodule, settings, torch.bfloat16))
    for task, datamodule in modules.items():
        progress(f"(2) loader vs step, {task}")
        rows.append(bench_loader(task, datamodule, settings))
    progress("(3) preprocessing")
    rows.append(bench_preprocessing(root, settings))
    for scale in (settings.demo, settings.paper):
        progress(f"(4) inference, {scale.name}")
        rows.extend(bench_inference(scale, settings))
    progress("(5) memory, demo and paper side by side")
    rows.extend(bench_memory((settings.demo, settings.paper), root, settings))
    progress("done")
    return rows


def meta(settings: Settings, threads_why: str, seconds: float) -> dict:
    device = torch.cuda.get_device_name(settings.device) if settings.cuda else cpu_name()
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "device": str(settings.device),
        "device_name": device,
        "cpus": os.cpu_count(),
        "load_avg_1min": os.getloadavg()[0],
        "threads": settings.threads,
        "threads_reason": threads_why,
        "torch": torch.__version__,
        "lightning": pl.__version__,
        "locseg": locseg.__version__,
        "python": platform.python_version(),
        "quick": settings.quick,
        "batches": settings.batches,
        "repeats": settings.repeats,
        "epochs": settings.epochs,
        "demo": asdict(settings.demo),
        "paper": asdict(settings.paper),
        "dataset": settings.dataset,
        "wall_s": seconds,
    }


def report(rows: list[Row], info: dict) -> dict:
    sections = {name: [r.as_dict() for r in rows if r.section == name] for name in SECTIONS}
    targets = [
        {k: r.as_dict()[k] for k in ("section", "name", "ratio", "target", "passed", "reason")}
        for r in rows
        if r.target is not None
    ]
    return {"meta": info, "sections": sections, "targets": targets}


def format_ratio(ratio: float | None) -> str:
    if ratio is None:
        return "-"
    return f"{ratio:.3f}" if ratio < 10 else f"{ratio:.1f}"


def render(rows: list[Row], info: dict) -> Table:
    table = Table(
        title="python -m locseg.bench",
        title_justify="left",
        caption=(
            f"{info['date']}, {info['device_name']} ({info['device']}, threads={info['threads']}, "
            f"{info['threads_reason']}), torch {info['torch']}, lightning {info['lightning']}; "
            f"demo = {Scale(**info['demo']).describe()}, "
            f"paper = {Scale(**info['paper']).describe()}"
            f"; {info['wall_s']:.0f} s"
        ),
        caption_justify="left",
    )
    for column, style in (
        ("Section", "bold"),
        ("Measure", ""),
        ("Ratio", "bold"),
        ("Target", ""),
        ("Result", ""),
        ("Measured", ""),
        ("Note / reason", "dim"),
    ):
        table.add_column(column, style=style, overflow="fold")
    for row in rows:
        result = {True: "[green]PASS[/]", False: "[red]MISS[/]", None: "[dim]info[/]"}[row.passed]
        note = f"[red]{row.reason}[/]; {row.note}" if row.reason else row.note
        table.add_row(
            row.section,
            row.name,
            format_ratio(row.ratio),
            f">= {row.target:g}" if row.target is not None else "-",
            result,
            row.detail,
            note,
        )
    return table


# --------------------------------------------------------------------------- command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m locseg.bench", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--image-size", type=int, help="demo input size in px (default 64)")
    parser.add_argument("--paper-size", type=int, help="paper input size in px (default 256)")
    parser.add_argument("--batches", type=int, help="batches per timed epoch / measurement (8)")
    parser.add_argument("--epochs", type=int, help="timed epochs per side in (1) (20)")
    parser.add_argument("--repeats", type=int, help="interleaved rounds in (2)-(4) (9)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument(
        "--threads", type=int, default=0, help="CPU threads (0: default; 1 if busy)"
    )
    parser.add_argument(
        "--compile",
        choices=("auto", "all", "none"),
        default="auto",
        help="torch.compile: auto = both sizes on CUDA, demo size only on CPU",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one round (CI smoke)")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for option in ("image_size", "paper_size", "batches", "epochs", "repeats"):
        value = getattr(args, option)
        if value is not None and value < 1:
            parser.error(f"--{option.replace('_', '-')} must be >= 1, got {value}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device; use --device cpu or auto")
    args.parser = parser
    return args


def settings_from(args: argparse.Namespace) -> tuple[Settings, str]:
    from locseg.models.unet import check_input_size

    quick = args.quick
    demo, paper = (QUICK_DEMO, QUICK_PAPER) if quick else (DEMO, PAPER)
    demo = replace(demo, image_size=args.image_size or demo.image_size)
    paper = replace(paper, image_size=args.paper_size or paper.image_size)
    for scale, option in ((demo, "--image-size"), (paper, "--paper-size")):
        try:
            check_input_size(scale.image_size, scale.depth)
        except ValueError as error:
            args.parser.error(f"{option}: {error}")
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if cuda else "cpu")
    threads, why = choose_threads(args.threads, device)
    settings = Settings(
        device=device,
        demo=demo,
        paper=paper,
        batches=args.batches or (2 if quick else 8),
        repeats=args.repeats or (1 if quick else 9),
        epochs=args.epochs or (2 if quick else 20),
        compile="none" if quick and args.compile == "auto" else args.compile,
        threads=threads,
        quick=quick,
        dataset=(
            {"n_localize": 40, "n_segment": 24, "size": 64}
            if quick
            else {"n_localize": 300, "n_segment": 60, "size": 128}
        ),
    )
    return settings, why


def main(argv: list[str] | None = None) -> dict | None:
    args = parse_args(argv)
    if args.memory_child:
        print(json.dumps(memory_child(json.loads(args.memory_child))))
        return None
    silence_lightning()
    settings, why = settings_from(args)
    if settings.device.type == "cpu":
        torch.set_num_threads(settings.threads)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="locseg-bench-") as workdir:
        settings.workdir = Path(workdir)
        rows = run_all(settings)
    info = meta(settings, why, time.perf_counter() - start)
    Console(width=max(Console().width, 160)).print(render(rows, info))
    result = report(rows, info)
    if args.json:
        write_json_atomic(args.json, result)
    return result


if __name__ == "__main__":
    main()
