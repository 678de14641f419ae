"""Shared fixtures: tiny datasets made in tmp_path, an isolated cache, offline W&B."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ["WANDB_MODE"] = "offline"
os.environ.setdefault("WANDB_SILENT", "true")
# Tiny models train fastest on one thread, and subprocess tests must not oversubscribe 2 cores.
os.environ["OMP_NUM_THREADS"] = "1"

SHARED_DRIONS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "drions-db"


def draw_disc_image(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, tuple]:
    """A reddish image with one bright disc: enough for data-layer tests."""
    yy, xx = np.mgrid[:size, :size]
    cx, cy = rng.uniform(size * 0.3, size * 0.7, 2)
    radius = size * rng.uniform(0.08, 0.14)
    mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2
    image = np.zeros((size, size, 3), np.uint8)
    image[..., 0] = 120 + rng.integers(0, 30, (size, size))
    image[..., 1] = 50
    image[mask] = (250, 220, 160)
    ys, xs = np.nonzero(mask)
    return image, mask, (float(xs.mean()), float(ys.mean()))


def make_dataset(
    root: Path, n_masked: int = 10, n_centre_only: int = 0, size: int = 48, groups: int = 0, seed=0
) -> Path:
    from locseg.data.dataset import DatasetWriter

    rng = np.random.default_rng(seed)
    with DatasetWriter(root) as writer:
        for i in range(n_masked):
            image, mask, center = draw_disc_image(rng, size)
            group = f"p{i % groups}" if groups else None
            writer.add(f"seg_{i:03d}", image, mask, center, group)
        for i in range(n_centre_only):
            image, _, center = draw_disc_image(rng, size)
            writer.add(f"loc_{i:03d}", image, None, center)
    return root


def write_labelled(root: Path, pictures, n_masked: int) -> Path:
    """Write (image, mask) pairs: the first ``n_masked`` with their mask, the rest centre only;
    every centre is its mask's centroid."""
    from locseg.data.dataset import DatasetWriter

    with DatasetWriter(root) as writer:
        for i, (image, mask) in enumerate(pictures):
            ys, xs = np.nonzero(mask)
            centre = (float(xs.mean()), float(ys.mean()))
            if i < n_masked:
                writer.add(f"seg_{i:03d}", image, mask, centre)
            else:
                writer.add(f"loc_{i:03d}", image, None, centre)
    return root


def make_fov_dataset(root: Path, n_masked: int = 12, n_centre_only: int = 0) -> Path:
    """64 x 48 photographs: black border, a red circular field of view, one bright disc.

    The field-of-view square (``crop_fov``) is then a true sub-frame, not the whole photograph.
    """
    rng = np.random.default_rng(11)
    yy, xx = np.mgrid[:48, :64]

    def draw():
        fx, fy = rng.uniform(28, 36), rng.uniform(22, 26)
        image = np.zeros((48, 64, 3), np.uint8)
        image[(xx - fx) ** 2 + (yy - fy) ** 2 <= 21**2] = (170, 60, 30)
        angle, radius = rng.uniform(0, 2 * np.pi), rng.uniform(4, 9)
        cx, cy = fx + radius * np.cos(angle), fy + radius * np.sin(angle)
        mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= rng.uniform(4, 6) ** 2
        image[mask] = (250, 220, 160)
        return image, mask

    return write_labelled(root, (draw() for _ in range(n_masked + n_centre_only)), n_masked)


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    import torch

    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own preprocessing cache, so cache hits are never accidental."""
    monkeypatch.setenv("LOCSEG_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def tiny_dataset(tmp_path) -> Path:
    return make_dataset(tmp_path / "tiny", n_masked=12, n_centre_only=16)


@pytest.fixture
def drions_root() -> Path:
    if not SHARED_DRIONS.is_dir():
        pytest.skip(f"DRIONS-DB not found at {SHARED_DRIONS} (../shared is absent on this machine)")
    return SHARED_DRIONS
