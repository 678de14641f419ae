"""The frame a network sees of a photograph, and its exact inverse.

A *frame* is the native-pixel rectangle that becomes the network's S x S input: native pixel
(x, y) is frame pixel (x - x0, y - y0), and the frame's ``width`` x ``height`` pixels are resized
to S x S. Two kinds are used:

- the identity stretch (``data.preprocess.crop_fov=false``, the paper's preprocessing): the whole
  photograph, x0 = y0 = 0, width x height = W x H. Not square: the aspect is distorted.
- the field-of-view square (``crop_fov=true``): the bounding box of the circular field of view
  (FOV), widened to a square and centred on the box. Where the square leaves the photograph
  (x0 or y0 negative, or past W or H) it is padded black. Square in, square out: no distortion.

Frames have integer corners, so cropping is exact slicing. Centres are normalised in the frame
with the pixel-centre convention, u = (x - x0 + 0.5) / width, which for the identity frame is the
cache's old u = (x + 0.5) / W. Predictions map back with :func:`from_frame` (centres) and
:func:`mask_from_frame` (probability maps): one call for both kinds of frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

FOV_WORK = 512  # longer side (px) of the thumbnail the field of view is found on
FOV_LEVEL = 0.08  # brighter than the border by this fraction of the 1st..99th percentile range
OPEN_FRACTION = 0.04  # opening radius, fraction of the thumbnail's shorter side: cuts text strips
EDGE_PX = 3  # rim points this close to the photograph's edge are cuts, not the circle
MIN_INLIERS = 0.3  # a circle fit agreeing with fewer rim points than this is not used
MARGIN_FRACTION = 0.01  # added on each side of the FOV box (fraction of the longer side)


@dataclass(frozen=True)
class Frame:
    """Native rectangle [x0, x0 + width) x [y0, y0 + height) shown to the network as S x S.

    Corners may lie outside the photograph (black padding). ``as_list`` is what the cache stores.
    """

    x0: int
    y0: int
    width: int
    height: int

    def __post_init__(self) -> None:
        if self.width < 1 or self.height < 1:
            raise ValueError(f"a frame needs a positive size, got {self.width} x {self.height}")

    def as_list(self) -> list[int]:
        return [self.x0, self.y0, self.width, self.height]

    @classmethod
    def from_list(cls, values) -> Frame:
        x0, y0, width, height = (int(v) for v in values)
        return cls(x0, y0, width, height)

    def is_identity(self, size_wh: tuple[int, int]) -> bool:
        """True when the frame is the whole photograph of native size ``size_wh``."""
        return self.as_list() == [0, 0, int(size_wh[0]), int(size_wh[1])]


def identity_frame(size_wh: tuple[int, int]) -> Frame:
    """The whole photograph stretched to S x S (today's preprocessing)."""
    return Frame(0, 0, int(size_wh[0]), int(size_wh[1]))


def square_frame(box: tuple[int, int, int, int]) -> Frame:
    """The square of side max(w, h) centred on ``box`` = (x0, y0, w, h)."""
    x0, y0, width, height = box
    side = max(width, height)
    return Frame(x0 - (side - width) // 2, y0 - (side - height) // 2, side, side)


def bright_region(channel: np.ndarray) -> np.ndarray:
    """uint8 {0, 1}: the largest region brighter than the border, thin strips opened away.

    The level is relative to the image's own dark and bright values (as in
    :func:`locseg.data.fingerprints.field_of_view`), taken on the brightest colour channel: the
    retina is red, so a dim periphery that a grey threshold loses (up to 100 px of a 600-px
    DRIONS-DB photograph) stays in. The opening removes film-frame numbers joined to the circle.
    """
    blurred = cv2.blur(channel.astype(np.float32), (5, 5))
    low, high = np.percentile(blurred, [1, 99])
    bright = (blurred > low + FOV_LEVEL * (high - low)).astype(np.uint8)
    radius = max(1, round(OPEN_FRACTION * min(channel.shape)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1,) * 2)
    opened = cv2.morphologyEx(bright, cv2.MORPH_OPEN, kernel)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(opened, connectivity=4)
    if count <= 1:
        return np.ones_like(bright)
    return (labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))).astype(np.uint8)


def fit_circle(region: np.ndarray) -> tuple[float, float, float] | None:
    """(cx, cy, r) of the circle through the region's rim, or None when no circle fits.

    Least squares (Kasa) on the rim points away from the photograph's edges, refitted five times
    on the points within max(1.5 px, 2.5 x the median residual): a dark stretch of retina cut
    off by the threshold, or border noise joined to the region, leaves the fit.
    """
    contours, _ = cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return None
    points = np.concatenate([c[:, 0, :] for c in contours]).astype(np.float64)
    height, width = region.shape
    x, y = points[:, 0], points[:, 1]
    inside = (x >= EDGE_PX) & (x < width - EDGE_PX) & (y >= EDGE_PX) & (y < height - EDGE_PX)
    points = points[inside]
    if len(points) < 20:
        return None
    inliers = np.ones(len(points), bool)
    for _ in range(5):
        chosen = points[inliers]
        design = np.c_[2 * chosen, np.ones(len(chosen))]
        (cx, cy, c), *_ = np.linalg.lstsq(design, (chosen**2).sum(axis=1), rcond=None)
        radius = math.sqrt(max(c + cx * cx + cy * cy, 0.0))
        residual = np.hypot(points[:, 0] - cx, points[:, 1] - cy) - radius
        tolerance = max(1.5, 2.5 * float(np.median(np.abs(residual[inliers]))))
        inliers = np.abs(residual) < tolerance
        if inliers.sum() < 20:
            return None
    plausible = 0.25 * min(height, width) <= radius <= max(height, width)
    return (cx, cy, radius) if plausible and inliers.mean() >= MIN_INLIERS else None


def fov_box(image: np.ndarray) -> tuple[int, int, int, int]:
    """Bounding box (x0, y0, w, h) of the circular field of view, in native px.

    Found on a thumbnail: the bright region (:func:`bright_region`) and the circle fitted to its
    rim (:func:`fit_circle`), whose box restores a dim periphery the threshold missed. The box is
    the union of the two (so it always holds the bright region, disc included), rounded
    outwards, widened by a 1% margin and clipped to the photograph. Without a dark border the
    region is the whole photograph. Measured on all 109 DRIONS-DB and 81 idrid-od photographs:
    every disc mask lies wholly inside (``tests/data/test_preprocess.py``).
    """
    channel = image if image.ndim == 2 else image.max(axis=2)
    height, width = channel.shape
    scale = min(1.0, FOV_WORK / max(height, width))
    work = channel
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        work = cv2.resize(channel, size, interpolation=cv2.INTER_AREA)
    region = bright_region(work)
    ys, xs = np.nonzero(region)
    left, top, right, bottom = xs.min(), ys.min(), xs.max() + 1.0, ys.max() + 1.0
    circle = fit_circle(region)
    if circle is not None:
        cx, cy, radius = circle
        left, top = min(left, cx - radius), min(top, cy - radius)
        right, bottom = max(right, cx + radius), max(bottom, cy + radius)
    margin = MARGIN_FRACTION * max(height, width)
    x0 = max(0, math.floor(left / scale - margin))
    y0 = max(0, math.floor(top / scale - margin))
    x1 = min(width, math.ceil(right / scale + margin))
    y1 = min(height, math.ceil(bottom / scale + margin))
    return x0, y0, x1 - x0, y1 - y0


def fov_frame(image: np.ndarray) -> Frame:
    """The black-padded square around the photograph's field of view."""
    return square_frame(fov_box(image))


def crop_to_frame(image: np.ndarray, frame: Frame) -> np.ndarray:
    """Pixels of ``frame`` (height, width[, C]); outside the photograph they are 0 (black).

    The identity frame returns ``image`` itself, so the default pipeline is untouched.
    """
    height, width = image.shape[:2]
    if frame.is_identity((width, height)):
        return image
    out = np.zeros((frame.height, frame.width, *image.shape[2:]), dtype=image.dtype)
    sx0, sy0 = max(frame.x0, 0), max(frame.y0, 0)
    sx1, sy1 = min(frame.x0 + frame.width, width), min(frame.y0 + frame.height, height)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - frame.y0 : sy1 - frame.y0, sx0 - frame.x0 : sx1 - frame.x0] = image[
            sy0:sy1, sx0:sx1
        ]
    return out


def to_frame(points_xy: np.ndarray, frame: Frame) -> np.ndarray:
    """Native pixel (x, y) -> normalised (u, v) in the frame; works on (..., 2) arrays."""
    origin = np.array([frame.x0, frame.y0], dtype=np.float64)
    scale = np.array([frame.width, frame.height], dtype=np.float64)
    return (np.asarray(points_xy, dtype=np.float64) - origin + 0.5) / scale


def from_frame(points_uv: np.ndarray, frame: Frame) -> np.ndarray:
    """Normalised (u, v) in the frame -> native pixel (x, y); the inverse of :func:`to_frame`."""
    origin = np.array([frame.x0, frame.y0], dtype=np.float64)
    scale = np.array([frame.width, frame.height], dtype=np.float64)
    return np.asarray(points_uv, dtype=np.float64) * scale - 0.5 + origin


def mask_from_frame(small_prob: np.ndarray, frame: Frame, native_wh: tuple[int, int]) -> np.ndarray:
    """(S, S) probabilities -> float32 (H, W) on the photograph's pixels.

    Bilinear (OpenCV's centre-aligned pixels) from S x S to the frame's size, then placed at the
    frame's corner; native pixels outside the frame get 0, frame pixels in the padding are
    dropped. For the identity frame this is exactly ``cv2.resize(prob, (W, H), INTER_LINEAR)``,
    what :func:`locseg.inference.native_mask` did before frames.
    """
    width, height = int(native_wh[0]), int(native_wh[1])
    resized = cv2.resize(
        small_prob.astype(np.float32), (frame.width, frame.height), interpolation=cv2.INTER_LINEAR
    )
    if frame.is_identity((width, height)):
        return resized
    out = np.zeros((height, width), np.float32)
    sx0, sy0 = max(frame.x0, 0), max(frame.y0, 0)
    sx1, sy1 = min(frame.x0 + frame.width, width), min(frame.y0 + frame.height, height)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0:sy1, sx0:sx1] = resized[
            sy0 - frame.y0 : sy1 - frame.y0, sx0 - frame.x0 : sx1 - frame.x0
        ]
    return out
