"""What a run's numbers depend on beyond its config and data: the software and the machine.

Same seed, same versions, same CPU instruction set and same thread count give identical
numbers; across CPUs torch dispatches float kernels (convolutions, reductions) to other code
(AVX-512 vs AVX2), whose rounding differs and grows over training. ``metrics.json`` records
this block under ``environment`` so two runs can be told apart before their numbers are.
"""

from __future__ import annotations

import os
import platform

import numpy as np
import pytorch_lightning as pl
import torch

import locseg
from locseg.benchmark.system import cpu_name

ISA_VARIABLES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")


def environment(device: torch.device | str | None = None) -> dict:
    """The software versions and the machine of this process, for ``metrics.json``.

    ``device`` is where the model ran; without it, CUDA if this process has used CUDA, else CPU.
    ``cpu_capability`` is the instruction set torch's CPU kernels dispatch to (settable with
    ``ATEN_CPU_CAPABILITY``); ``threads`` is torch's intra-op thread count now.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() and torch.cuda.is_initialized() else "cpu"
    device = torch.device(device)
    cuda = device.type == "cuda"
    return {
        "torch": torch.__version__,
        "lightning": pl.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "locseg": locseg.__version__,
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        # oneDNN (convolutions) picks its own ISA from the CPU; these variables cap both.
        "isa_overrides": {k: os.environ[k] for k in ISA_VARIABLES if k in os.environ},
        "threads": torch.get_num_threads(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if cuda else None,
        "cuda": torch.version.cuda if cuda else None,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
    }
