"""Training augmentation with albumentations: the centre and the mask move with the image."""

from __future__ import annotations

import albumentations as A
import numpy as np


def build_augmentation(
    enabled: bool = True,
    hflip: float = 0.5,
    vflip: float = 0.0,
    affine_p: float = 0.5,
    rotate: float = 10.0,
    scale: float = 0.1,
    translate: float = 0.05,
    brightness_contrast_p: float = 0.5,
    brightness: float = 0.1,
    contrast: float = 0.1,
    gamma_p: float = 0.3,
    gamma: tuple[float, float] = (90, 110),
) -> A.Compose | None:
    """A keypoint- and mask-aware pipeline, or ``None`` when augmentation is off.

    Keypoints are (x, y) in input pixels; ``remove_invisible=False`` keeps a centre that an
    affine pushes off the image, so every sample keeps exactly one target.
    """
    if not enabled:
        return None
    return A.Compose(
        [
            A.HorizontalFlip(p=hflip),
            A.VerticalFlip(p=vflip),
            A.Affine(
                scale=(1 - scale, 1 + scale),
                translate_percent=(-translate, translate),
                rotate=(-rotate, rotate),
                border_mode=0,
                p=affine_p,
            ),
            A.RandomBrightnessContrast(
                brightness_limit=brightness, contrast_limit=contrast, p=brightness_contrast_p
            ),
            A.RandomGamma(gamma_limit=tuple(gamma), p=gamma_p),
        ],
        keypoint_params=A.KeypointParams(format="xy", remove_invisible=False),
    )


def seed_augmentation(pipeline: A.Compose | None, seed: int) -> None:
    """Seed albumentations' own generators (``pl.seed_everything`` does not reach them)."""
    if pipeline is not None:
        pipeline.set_random_seed(int(seed))


def apply_augmentation(
    pipeline: A.Compose | None, image: np.ndarray, mask: np.ndarray, center_px: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Augment one uint8 image, its uint8 mask and its (x, y) centre in input pixels."""
    if pipeline is None:
        return image, mask, center_px
    out = pipeline(image=image, mask=mask, keypoints=center_px.reshape(1, 2))
    return out["image"], out["mask"], np.asarray(out["keypoints"], dtype=np.float32).reshape(2)
