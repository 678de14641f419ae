"""The machine and the process: threads, CPU name, quiet output, memory read from /proc."""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import resource
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from locseg.logs import quiet_known_noise


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
    """The known noise (``locseg.quiet_known_noise``), and Lightning's info lines and the
    warnings a benchmark's bare Trainer raises by design (no validation, TF32 left off)."""
    quiet_known_noise()
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*Tensor Cores.*")
    warnings.filterwarnings("ignore", message=".*no `val_dataloader`.*")


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
