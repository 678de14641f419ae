"""Disc-centred regions: the square crop a segmenter sees and its exact inverse.

A whole photograph squeezed to 64 px leaves the disc 8-10 px wide; a square of about three disc
diameters around the disc, resized to the same 64 px, shows it about 21 px wide. The localizer
chooses the square, the segmenter works inside it, and :func:`paste_back` returns its output to
the photograph's own pixels, so every metric is computed there and a missed centre costs Dice.

Coordinates are native pixels with pixel centres on integers (x right, y down), as the centres
in ``centers.csv`` and the mask centroids are. A :class:`Box` is integer and square: it covers the
pixels ``x0 .. x0 + side - 1`` and ``y0 .. y0 + side - 1`` and may reach beyond the photograph,
where the crop is black (and :func:`paste_back` leaves nothing). Resizing follows OpenCV's
half-pixel convention, so crop pixel ``u`` of an ``S``-px crop is centred on native
``x0 + (u + 0.5) * side / S - 0.5`` (:meth:`Box.to_native`), for the image, the mask and the
probabilities alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from locseg.data.frames import identity_frame
from locseg.data.preprocess import PreprocessConfig, preprocess_image, resize_mask
from locseg.options import word

CENTRE_SOURCES = ("predicted", "true")


class RoiError(ValueError):
    """Bad region options; the message names the value and the fix."""


@dataclass(frozen=True)
class RoiSpec:
    """How big the crop is and how far training moves it.

    The side is ``side_px`` native pixels when given, else ``side_diameters`` times the median
    disc diameter of the training masks (:meth:`side_for`), so test images never choose their own
    crop. ``jitter`` moves the training crop's centre by up to ``jitter * side`` in x and y, the
    way an imperfect localizer will at test time.
    """

    side_diameters: float | None = 3.0
    side_px: int | None = None
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if self.side_px is None and self.side_diameters is None:
            raise RoiError("data.roi needs side_px (native px) or side_diameters (disc diameters)")
        if self.side_px is not None and int(self.side_px) < 2:
            raise RoiError(f"roi.side_px={self.side_px} must be at least 2 native pixels")
        if self.side_px is None and not float(self.side_diameters) > 0:
            raise RoiError(f"roi.side_diameters={self.side_diameters} must be positive")
        if not 0.0 <= float(self.jitter) < 0.5:
            raise RoiError(
                f"roi.jitter={self.jitter} must lie in [0, 0.5) (a fraction of the side)"
            )

    def side_for(self, diameters: Sequence[float]) -> int:
        """The crop side in native px: ``side_px``, or ``side_diameters`` x median diameter."""
        if self.side_px is not None:
            return int(self.side_px)
        known = [float(d) for d in diameters if math.isfinite(float(d)) and float(d) > 0]
        if not known:
            raise RoiError(
                "roi.side_diameters needs disc diameters from training masks, and none has one; "
                "set roi.side_px (native px) instead"
            )
        return max(2, round(float(self.side_diameters) * float(np.median(known))))

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Box:
    """A square of native pixels: columns ``x0 .. x0 + side - 1``, rows ``y0 .. y0 + side - 1``."""

    x0: int
    y0: int
    side: int

    @property
    def center(self) -> tuple[float, float]:
        half = (self.side - 1) / 2
        return self.x0 + half, self.y0 + half

    def to_native(self, xy: np.ndarray, out_size: int) -> np.ndarray:
        """(..., 2) pixel coordinates in an ``out_size`` crop -> native pixels."""
        scale = self.side / out_size
        return (np.asarray(xy, dtype=np.float64) + 0.5) * scale - 0.5 + (self.x0, self.y0)

    def to_crop(self, xy: np.ndarray, out_size: int) -> np.ndarray:
        """(..., 2) native pixel coordinates -> pixels of an ``out_size`` crop (exact inverse)."""
        scale = out_size / self.side
        return (np.asarray(xy, dtype=np.float64) - (self.x0, self.y0) + 0.5) * scale - 0.5

    def as_list(self) -> list[int]:
        return [self.x0, self.y0, self.side]


def box_around(center_xy: Sequence[float], side: int) -> Box:
    """The ``side`` x ``side`` box whose centre is nearest to ``center_xy`` (within half a px)."""
    side = int(side)
    if side < 1:
        raise RoiError(f"box side {side} must be at least 1 pixel")
    x, y = (float(v) for v in center_xy)
    if not (math.isfinite(x) and math.isfinite(y)):
        raise RoiError(f"box centre {center_xy} is not a finite point")
    half = (side - 1) / 2
    return Box(math.floor(x - half + 0.5), math.floor(y - half + 0.5), side)


def cut(image: np.ndarray, box: Box) -> np.ndarray:
    """The box's native pixels, ``side`` x ``side`` (channels kept); black beyond the image."""
    height, width = image.shape[:2]
    out = np.zeros((box.side, box.side, *image.shape[2:]), dtype=image.dtype)
    x_lo, y_lo = max(box.x0, 0), max(box.y0, 0)
    x_hi, y_hi = min(box.x0 + box.side, width), min(box.y0 + box.side, height)
    if x_lo < x_hi and y_lo < y_hi:
        out[y_lo - box.y0 : y_hi - box.y0, x_lo - box.x0 : x_hi - box.x0] = image[
            y_lo:y_hi, x_lo:x_hi
        ]
    return out


def _interpolation(source: int, target: int) -> int:
    """Area averaging to shrink (no aliasing, as the preprocessing), bilinear to enlarge."""
    return cv2.INTER_AREA if source >= target else cv2.INTER_LINEAR


def crop(image_native: np.ndarray, box: Box, out_size: int) -> np.ndarray:
    """The box resized to ``out_size`` x ``out_size`` (same dtype; black where off the image)."""
    piece = cut(image_native, box)
    interpolation = _interpolation(box.side, out_size)
    return cv2.resize(piece, (out_size, out_size), interpolation=interpolation)


def crop_mask(mask_native: np.ndarray, box: Box, out_size: int) -> np.ndarray:
    """Binary mask -> uint8 {0, 1} crop on the image crop's grid (area, then one half)."""
    return resize_mask(cut(np.asarray(mask_native, dtype=np.uint8), box), out_size)


def crop_input(image_native: np.ndarray, box: Box, config: PreprocessConfig) -> np.ndarray:
    """The network input of a crop: the paper's preprocessing applied to the box's own pixels.

    Gray, min-max and CLAHE see the crop at native resolution (CLAHE's tiles then span the disc's
    neighbourhood, not the whole fundus); the resize to ``config.image_size`` comes last, as
    :func:`locseg.data.preprocess.preprocess_image` does for whole photographs. The crop is its
    own frame: ``config.crop_fov`` (the field-of-view square of whole photographs) is not applied
    to it again, so a ``crop_fov`` DataModule's crops are those of a plain one.

    This is the one crop pipeline: training windows (cut from cached native pixels, see
    :func:`preprocess_piece`), validation and test crops, ``locseg.evaluate`` and
    ``locseg.predict`` all preprocess exactly the box they feed the network, never a larger area.
    """
    return preprocess_piece(cut(image_native, box), config)


def preprocess_piece(piece: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """:func:`crop_input` of pixels already cut (:func:`cut`; RGB, or the gray of :func:`gray`).

    The luma of an RGB photograph is computed per pixel in uint8, so cutting a box from
    :func:`gray`'s output gives the very input :func:`crop_input` makes from the photograph.
    """
    side = (piece.shape[1], piece.shape[0])
    return preprocess_image(piece, config, 0.0, 1.0, identity_frame(side))


def gray(image_native: np.ndarray) -> np.ndarray:
    """uint8 (H, W) luma: what the preprocessing reads of an RGB or gray uint8 photograph."""
    image = np.asarray(image_native)
    if image.ndim == 2:
        return image.astype(np.uint8, copy=False)
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def paste_back(prob_small: np.ndarray, box: Box, native_wh: Sequence[int]) -> np.ndarray:
    """(S, S) crop probabilities -> float32 (H, W) on the photograph; zero outside the box.

    Bilinear with centre-aligned pixels, the inverse of :func:`crop`'s grid (see
    :meth:`Box.to_native`); a box reaching beyond the photograph loses what lies outside it.
    """
    width, height = (int(v) for v in native_wh)
    prob = np.asarray(prob_small, dtype=np.float32)
    if prob.ndim != 2 or prob.shape[0] != prob.shape[1]:
        raise RoiError(f"paste_back needs square (S, S) probabilities, got shape {prob.shape}")
    big = cv2.resize(prob, (box.side, box.side), interpolation=cv2.INTER_LINEAR)
    out = np.zeros((height, width), dtype=np.float32)
    x_lo, y_lo = max(box.x0, 0), max(box.y0, 0)
    x_hi, y_hi = min(box.x0 + box.side, width), min(box.y0 + box.side, height)
    if x_lo < x_hi and y_lo < y_hi:
        out[y_lo:y_hi, x_lo:x_hi] = big[
            y_lo - box.y0 : y_hi - box.y0, x_lo - box.x0 : x_hi - box.x0
        ]
    return out


def jitter_px(spec: RoiSpec, side: int) -> int:
    """Native px a training window moves at most in x and y: ``floor(jitter * side)``.

    Training windows are ``side`` px boxes at integer offsets inside a box of ``side + 2 * m``
    around the true centre (:func:`window_in`), preprocessed on their own pixels like test crops.
    """
    return math.floor(float(spec.jitter) * int(side))


def window_in(outer: Box, offset: Sequence[int], side: int) -> Box:
    """The ``side`` px box at integer ``offset`` (x, y) native px from ``outer``'s corner."""
    ox, oy = (int(v) for v in offset)
    if not (0 <= ox <= outer.side - side and 0 <= oy <= outer.side - side):
        raise RoiError(f"window offset {(ox, oy)} leaves the {outer.side}-px box for side {side}")
    return Box(outer.x0 + ox, outer.y0 + oy, int(side))


def check_centre_source(source: object, name: str = "roi.test_centres") -> str:
    """``predicted`` or ``true`` (also the YAML boolean Hydra makes of ``name=true``)."""
    try:
        return word(name, source, CENTRE_SOURCES, RoiError)
    except RoiError as error:
        raise RoiError(
            f"{error} (predicted: the localizer's centre, the honest test; true: the oracle bound)"
        ) from None
