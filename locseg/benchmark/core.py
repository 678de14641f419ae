"""What every section shares: the scales, the run's settings and one result row."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from rich.console import Console

TRAIN_TARGET = 0.95
LOADER_TARGET = 5.0
PREPROCESS_TARGET = 20.0
SECTIONS = ("training", "loader", "preprocessing", "inference", "memory", "efficiency")
TARGET_KEY = {"localize": "center", "segment": "mask"}

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
# The real recipe's segmenter (conf/experiment/real.yaml: 64 px crops, width 16); used by (6).
REAL = Scale("real", 64, 3, 16, 8)
QUICK_REAL = Scale("real", 32, 3, 8, 4)
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
    # Batches per timed epoch in (1); None: whole epochs, as training runs them, so the epoch's
    # fixed costs (iterator, epoch-end logging) weigh as much as they do for a user.
    train_batches: int | None = None

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
