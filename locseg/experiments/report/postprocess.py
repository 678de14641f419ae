"""What each post-processing switch did in a sweep: how often validation chose it, and what it cost.

Every segment job decides its switches (flip TTA, largest component, fill holes) on its own
validation images and records the decision in ``metrics.json["postprocess_choice"]``: for each
switch, the mean validation Dice with and without it at the moment it was decided. The test Dice
raw (``test.dice_native``) and with the chosen switches (``test.dice_native_post``) sit beside
it. This section sums those up per switch and per arm, so the on/off effect is read, not guessed.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

__all__ = ["SwitchSummary", "PostSummary", "summarise_postprocessing"]


@dataclass(frozen=True)
class SwitchSummary:
    """One switch over the jobs that decided it on validation."""

    switch: str
    jobs: int
    chosen: int
    val_with: float  # mean validation Dice with the switch (at its decision)
    val_without: float


@dataclass(frozen=True)
class PostSummary:
    """Test Dice raw and post-processed, per arm, over the jobs that report both."""

    arm: str
    jobs: int
    test_raw: float
    test_post: float


def _choices(records: list[dict]) -> list[dict]:
    return [
        r
        for r in records
        if r.get("status") == "ok" and isinstance(r.get("postprocess_choice"), dict)
    ]


def _switch_summaries(records: list[dict]) -> list[SwitchSummary]:
    steps: dict[str, list[dict]] = defaultdict(list)
    for rec in records:
        for step in rec["postprocess_choice"].get("steps") or []:
            if step.get("source") == "validation":
                steps[str(step["switch"])].append(step)
    return [
        SwitchSummary(
            switch=name,
            jobs=len(found),
            chosen=sum(bool(s.get("chosen")) for s in found),
            val_with=float(np.mean([s["val_dice_with"] for s in found])),
            val_without=float(np.mean([s["val_dice_without"] for s in found])),
        )
        for name, found in steps.items()
    ]


def _test_summaries(records: list[dict]) -> list[PostSummary]:
    by_arm: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for rec in records:
        test = rec.get("test") or {}
        raw, post = test.get("dice_native"), test.get("dice_native_post")
        if isinstance(raw, int | float) and isinstance(post, int | float):
            by_arm[rec["arm"]].append((float(raw), float(post)))
    return [
        PostSummary(arm, len(pairs), *np.mean(np.asarray(pairs), axis=0).tolist())
        for arm, pairs in by_arm.items()
    ]


def summarise_postprocessing(
    records: list[dict],
) -> tuple[list[SwitchSummary], list[PostSummary]]:
    """Per switch (validation) and per arm (test); empty lists when no job recorded a choice."""
    chosen = _choices(records)
    return _switch_summaries(chosen), _test_summaries(chosen)
