"""Timing on a shared, noisy machine: paired measurements and a median with its interval."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator

import torch


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
