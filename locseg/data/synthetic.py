"""Procedural fundus photographs with exact optic-disc labels: locseg's embedded default data.

Each image is a small physical story told in float RGB: an albedo map (orange-red choroid with
texture, a darker fovea, a pale elliptical disc with a soft edge and a brighter cup, a vessel
tree that radiates from the cup and crosses the disc, exudate-like bright spots), multiplied by
an uneven illumination, plus additive reflections, then blur, exposure, noise and a circular
field of view. The disc is *not* the only bright thing: reflections and exudates are as bright,
and exposure moves the disc's brightness, so a global threshold or "brightest pixel" does not
solve the task; the cues an encoder must learn are shape, cup and converging vessels.

Ground truth is exact: the centre is the ellipse's centre and the mask is the ellipse (where the
soft edge is at half height), so the mask's centroid lies within a pixel of the centre.

The dataset mirrors the paper: a large centre-only pool (``loc_0000`` ..., localization) and a
small, disjoint masked pool (``seg_0000`` ..., segmentation, with masks and centres). Every image
is drawn from its own child seed ``[seed, pool, index]``, so a pool never depends on the other's
size, and the same seed gives byte-identical files.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from rich.console import Console
from rich.progress import track

from locseg.data.dataset import CENTERS_FILE, DatasetError, DatasetWriter
from locseg.io import write_json_atomic

HELP = "draw a procedural fundus dataset (centre-only pool + masked pool)"
PARAMS_FILE = "synthetic.json"
GENERATOR_VERSION = 1  # bump when the drawing changes, so cached folders are regenerated
MIN_SIZE = 32
POOLS = (("loc", 0, "n_localize"), ("seg", 1, "n_segment"))  # id prefix, seed index, count
_OUR_FILE = re.compile(r"^(loc|seg)_\d+\.png$")

Float = np.float32


# --------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class Layout:
    """Where things are, in pixels (x right, y down, pixel centres at integers)."""

    size: int
    fov_centre: tuple[float, float]
    fov_radius: float
    disc_centre: tuple[float, float]
    disc_axes: tuple[float, float]  # semi-axes (a along ``disc_angle``, b across)
    disc_angle: float  # radians
    fovea: tuple[float, float]
    fovea_angle: float  # direction disc -> fovea, radians

    @property
    def disc_radius(self) -> float:
        """Radius of the circle with the disc's area."""
        return math.sqrt(self.disc_axes[0] * self.disc_axes[1])


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (x, y), shared read-only between draws of one size."""
    ys, xs = np.mgrid[0:size, 0:size].astype(Float)
    xs.flags.writeable = False
    ys.flags.writeable = False
    return xs, ys


def _offsets(size: int, centre) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel (dx, dy) from ``centre``."""
    xs, ys = _grid(size)
    return xs - Float(centre[0]), ys - Float(centre[1])


def _distance(size: int, centre) -> np.ndarray:
    dx, dy = _offsets(size, centre)
    return np.sqrt(dx * dx + dy * dy)


def _ellipse_radius(size: int, centre, axes, angle: float) -> np.ndarray:
    """Normalised elliptical radius: 1 on the ellipse, 0 at its centre."""
    dx, dy = _offsets(size, centre)
    cos, sin = Float(math.cos(angle)), Float(math.sin(angle))
    u = (dx * cos + dy * sin) / Float(axes[0])
    v = (-dx * sin + dy * cos) / Float(axes[1])
    return np.sqrt(u * u + v * v)


def _gaussian(size: int, centre, sigma: float) -> np.ndarray:
    dx, dy = _offsets(size, centre)
    return np.exp(-(dx * dx + dy * dy) / Float(2 * sigma * sigma))


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Band-limited noise (about unit std): a coarse random grid upsampled smoothly."""
    coarse = rng.standard_normal((cells, cells)).astype(Float)
    return cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)


def _sample_layout(rng: np.random.Generator, size: int) -> Layout:
    """Field of view, disc and fovea; the disc wanders (disc- and macula-centred shots)."""
    s = float(size)
    fov_centre = (s / 2 - 0.5 + rng.normal(0, 0.01 * s), s / 2 - 0.5 + rng.normal(0, 0.01 * s))
    fov_radius = s * rng.uniform(0.46, 0.54)  # above 0.5 the circle is clipped, as in DRIONS-DB
    radius = s * rng.uniform(0.07, 0.11)
    ratio = rng.uniform(0.78, 1.0)  # b / a
    axes = (radius / math.sqrt(ratio), radius * math.sqrt(ratio))
    angle = rng.normal(math.pi / 2, 0.5)  # discs are mostly taller than wide
    margin = axes[0] + 0.04 * s
    for _ in range(100):
        centre = (
            fov_centre[0] + rng.uniform(-0.3, 0.3) * s,
            fov_centre[1] + rng.uniform(-0.16, 0.16) * s,
        )
        inside_fov = math.dist(centre, fov_centre) + margin <= fov_radius
        inside_image = all(margin <= c <= s - 1 - margin for c in centre)
        if inside_fov and inside_image:
            break
    else:  # pragma: no cover - the central position always fits
        centre = fov_centre
    offset = centre[0] - fov_centre[0]
    if abs(offset) < 0.05 * s:
        towards = rng.choice([0.0, math.pi])
    else:
        towards = 0.0 if offset < 0 else math.pi  # the fovea lies toward the image centre
    fovea_angle = towards + rng.normal(0, 0.15) + (0.12 if towards == 0.0 else -0.12)
    distance = 5.0 * radius * rng.uniform(0.9, 1.1)  # about 2.5 disc diameters
    fovea = (
        centre[0] + distance * math.cos(fovea_angle),
        centre[1] + distance * math.sin(fovea_angle),
    )
    return Layout(size, fov_centre, fov_radius, centre, axes, angle, fovea, fovea_angle)


# --------------------------------------------------------------------------- vessels


def _grow_vessel(
    rng: np.random.Generator,
    layout: Layout,
    start: tuple[float, float],
    angle: float,
    width: float,
    bend_to: float | None,
    depth: int,
    out: list[np.ndarray],
) -> None:
    """Walk one vessel outward, tapering and branching; append its (x, y, width) nodes."""
    step = 0.018 * layout.size
    min_width = 0.08 * layout.disc_radius
    max_steps = int(3 * layout.fov_radius / step)
    turns = rng.normal(0, 0.12, max_steps)  # drawn at once: a Python loop of rng calls is slow
    branches = rng.random(max_steps) < (0.08 if depth < 3 else 0.0)
    x, y = start
    nodes = [(x, y, width)]
    for turn, branch in zip(turns, branches, strict=True):
        if width < min_width:
            break
        if bend_to is not None:  # the temporal arcades curve around the macula
            turn += 0.045 * math.sin(bend_to - angle)
        angle += turn
        x, y = x + step * math.cos(angle), y + step * math.sin(angle)
        width *= 0.99
        nodes.append((x, y, width))
        outside = math.dist((x, y), layout.fov_centre) > layout.fov_radius + step
        in_fovea = math.dist((x, y), layout.fovea) < 0.9 * layout.disc_radius  # avascular zone
        if outside or in_fovea:
            break
        if branch:
            child_angle = angle + rng.choice([-1.0, 1.0]) * rng.uniform(0.4, 1.0)
            child_width = width * rng.uniform(0.5, 0.8)
            _grow_vessel(rng, layout, (x, y), child_angle, child_width, None, depth + 1, out)
            width *= 0.9
    if len(nodes) > 1:
        out.append(np.array(nodes))


def _vessel_tree(rng: np.random.Generator, layout: Layout) -> list[np.ndarray]:
    """Trunks leave the cup: two temporal arcades (vein + artery), nasal trunks, macular twigs."""
    segments: list[np.ndarray] = []
    fovea_dir = layout.fovea_angle
    r = layout.disc_radius
    trunk = 0.24 * r  # a major vein is about 1/8 of a disc diameter
    cx, cy = layout.disc_centre
    for sign in (-1.0, 1.0):
        for kind in (1.0, 0.7):  # vein, then its companion artery
            start = (cx + rng.normal(0, 0.15 * r), cy + rng.normal(0, 0.15 * r))
            angle = fovea_dir + sign * rng.uniform(1.2, 1.7)
            _grow_vessel(rng, layout, start, angle, trunk * kind, fovea_dir, 1, segments)
    for _ in range(int(rng.integers(2, 4))):
        angle = fovea_dir + math.pi + rng.uniform(-1.1, 1.1)
        width = trunk * rng.uniform(0.45, 0.7)
        _grow_vessel(rng, layout, (cx, cy), angle, width, None, 1, segments)
    for _ in range(int(rng.integers(1, 3))):
        angle = fovea_dir + rng.uniform(-0.5, 0.5)
        start = (cx + 0.8 * r * math.cos(angle), cy + 0.8 * r * math.sin(angle))
        _grow_vessel(rng, layout, start, angle, trunk * rng.uniform(0.35, 0.5), None, 2, segments)
    return segments


def _draw_vessels(rng: np.random.Generator, layout: Layout) -> np.ndarray:
    """Vessel opacity in [0, 1], drawn supersampled so sub-pixel widths stay smooth."""
    factor = int(np.clip(math.ceil(512 / layout.size), 2, 8))
    big = np.zeros((layout.size * factor,) * 2, np.uint8)
    shift = 4  # cv2 fixed-point sub-pixel bits
    offset = (factor - 1) / 2  # output pixel centre inside its block of big pixels
    for nodes in _vessel_tree(rng, layout):
        points = np.round((nodes[:, :2] * factor + offset) * 2**shift).astype(np.int32)
        thickness = np.maximum(1, np.round(nodes[1:, 2] * factor)).astype(int)
        cuts = (np.flatnonzero(np.diff(thickness)) + 1).tolist()  # one polyline per thickness
        for begin, end in zip([0, *cuts], [*cuts, len(thickness)], strict=True):
            width = thickness[begin] / factor  # thicker vessels are darker
            opacity = int(255 * min(1.0, 0.55 + 0.9 * width / layout.disc_radius))
            run = points[begin : end + 1]
            cv2.polylines(big, [run], False, opacity, int(thickness[begin]), cv2.LINE_AA, shift)
    small = cv2.resize(big, (layout.size, layout.size), interpolation=cv2.INTER_AREA)
    return small.astype(Float) / Float(255)


# --------------------------------------------------------------------------- albedo


def _choroid(rng: np.random.Generator, size: int) -> np.ndarray:
    """Orange-red background with mottled texture, as reflectance (H, W, 3)."""
    red = rng.uniform(0.72, 0.92)
    colour = np.array([red, red * rng.uniform(0.28, 0.5), red * rng.uniform(0.04, 0.14)], Float)
    texture = 0.02 * _smooth_noise(rng, size, max(4, size // 3))
    texture += 0.025 * _smooth_noise(rng, size, max(4, size // 10))
    return colour[None, None, :] * (1 + texture)[:, :, None]


def _add_fovea(rng: np.random.Generator, albedo: np.ndarray, layout: Layout) -> None:
    """Darker, browner macula with a darker pit: a dark landmark 2.5 disc diameters away."""
    r = layout.disc_radius
    macula = _gaussian(layout.size, layout.fovea, r * rng.uniform(1.2, 1.8))
    pit = _gaussian(layout.size, layout.fovea, r * 0.45)
    depth = rng.uniform(0.2, 0.45)
    darken = depth * macula + 0.15 * pit
    albedo *= 1 - darken[:, :, None] * np.array([0.7, 1.0, 1.0], Float)


def _soft_step(rho: np.ndarray, width: float) -> np.ndarray:
    """1 inside, 0 outside, exactly 0.5 on rho == 1: the mask edge sits at half height."""
    return Float(1) / (Float(1) + np.exp(np.minimum((rho - Float(1)) / Float(width), 50)))


def _add_disc(rng: np.random.Generator, albedo: np.ndarray, layout: Layout) -> np.ndarray:
    """Pale disc with a soft edge, brighter off-centre cup, sometimes a pale crescent beside it.

    Returns the normalised elliptical radius, whose ``<= 1`` region is the mask.
    """
    size, r = layout.size, layout.disc_radius
    rho = _ellipse_radius(size, layout.disc_centre, layout.disc_axes, layout.disc_angle)
    edge = rng.uniform(0.06, 0.16)
    disc = _soft_step(rho, edge)
    toward_fovea = np.array([math.cos(layout.fovea_angle), math.sin(layout.fovea_angle)])
    dx, dy = _offsets(size, layout.disc_centre)
    side = (dx * Float(toward_fovea[0]) + dy * Float(toward_fovea[1])) / Float(r)  # temporal > 0
    colour = np.array([1.0, rng.uniform(0.78, 0.92), rng.uniform(0.5, 0.7)], Float)
    colour *= Float(rng.uniform(0.85, 1.3))  # from dull to near saturation
    strength = rng.uniform(0.7, 1.0) * (1 + 0.15 * np.clip(side, -1, 1))  # paler temporally
    albedo += (colour - albedo) * (disc * strength)[:, :, None]

    if rng.random() < 0.3:  # peripapillary atrophy: a paler crescent outside the disc
        ring = _soft_step(rho / rng.uniform(1.25, 1.5), 0.08) * (1 - disc)
        crescent = ring * np.clip(side / 1.2, 0, 1) * rng.uniform(0.25, 0.5)
        albedo += (colour - albedo) * crescent[:, :, None]

    cup_scale = rng.uniform(0.3, 0.6)
    shift = rng.uniform(0.05, 0.25) * r * toward_fovea
    cup_centre = (layout.disc_centre[0] + shift[0], layout.disc_centre[1] + shift[1])
    cup_axes = (layout.disc_axes[0] * cup_scale, layout.disc_axes[1] * cup_scale)
    cup = _soft_step(_ellipse_radius(size, cup_centre, cup_axes, layout.disc_angle), 0.25)
    cup_colour = np.array([1.0, 0.95, rng.uniform(0.75, 0.9)], Float)
    albedo += (cup_colour - albedo) * (cup * rng.uniform(0.4, 0.8))[:, :, None]
    return rho


def _add_vessels(rng: np.random.Generator, albedo: np.ndarray, layout: Layout) -> None:
    """Dark red vessels over everything, the disc included."""
    opacity = _draw_vessels(rng, layout)
    tint = np.array([rng.uniform(0.3, 0.5), rng.uniform(0.7, 0.85), 0.8], Float)  # absorption
    albedo *= 1 - opacity[:, :, None] * tint


def _away_from_disc(rng: np.random.Generator, layout: Layout, min_distance: float):
    """A random point inside the field of view at least ``min_distance`` from the disc centre."""
    for _ in range(50):
        angle = rng.uniform(0, 2 * math.pi)
        dist = layout.fov_radius * math.sqrt(rng.uniform(0, 0.85))
        point = (
            layout.fov_centre[0] + dist * math.cos(angle),
            layout.fov_centre[1] + dist * math.sin(angle),
        )
        if math.dist(point, layout.disc_centre) >= min_distance:
            return point
    return None


def _add_exudates(rng: np.random.Generator, albedo: np.ndarray, layout: Layout) -> None:
    """Yellow-white lesions as pale as the disc: hard exudates in clusters, or a drusen patch."""
    r = layout.disc_radius
    colour = np.array([1.0, rng.uniform(0.8, 0.95), rng.uniform(0.4, 0.65)], Float)
    colour *= Float(rng.uniform(1.0, 1.3))  # as pale as the disc
    spots = np.zeros((layout.size,) * 2, Float)
    if rng.random() < 0.4:
        for _ in range(int(rng.integers(1, 4))):
            cluster = _away_from_disc(rng, layout, 2.5 * r)
            if cluster is None:
                continue
            for _ in range(int(rng.integers(2, 7))):
                centre = (cluster[0] + rng.normal(0, r), cluster[1] + rng.normal(0, r))
                sigma = r * rng.uniform(0.12, 0.35)
                spots = np.maximum(spots, _gaussian(layout.size, centre, sigma) * 1.6)
    if rng.random() < 0.15:
        centre = _away_from_disc(rng, layout, 3.0 * r)
        if centre is not None:
            patch = _gaussian(layout.size, centre, r * rng.uniform(0.4, 0.8)) * 1.3
            spots = np.maximum(spots, patch)
    strength = np.clip(spots, 0, 1) * rng.uniform(0.6, 0.95)
    albedo += (colour - albedo) * strength[:, :, None]


# --------------------------------------------------------------------------- camera


def _illumination(rng: np.random.Generator, layout: Layout) -> np.ndarray:
    """Vignetting around an off-centre hot spot, times slow random variation."""
    size = layout.size
    hot = (
        layout.fov_centre[0] + rng.normal(0, 0.12) * size,
        layout.fov_centre[1] + rng.normal(0, 0.12) * size,
    )
    r2 = (_distance(size, hot) / Float(layout.fov_radius)) ** 2
    falloff = 1 - rng.uniform(0.2, 0.5) * np.minimum(r2, 2.0) ** rng.uniform(0.8, 1.4)
    slow = np.exp(Float(rng.uniform(0.05, 0.18)) * _smooth_noise(rng, size, 4))
    return np.clip(falloff, 0.15, None) * slow


def _reflections(rng: np.random.Generator, layout: Layout) -> np.ndarray:
    """Additive whitish glare: rim crescents and soft lens reflections, as bright as the disc."""
    size, r = layout.size, layout.disc_radius
    glare = np.zeros((size, size), Float)
    if rng.random() < 0.3:  # crescent reflex at the rim of the pupil
        dx, dy = _offsets(size, layout.fov_centre)
        dist = np.sqrt(dx * dx + dy * dy)
        phi = np.arctan2(dy, dx) - Float(rng.uniform(-math.pi, math.pi))
        phi = np.arctan2(np.sin(phi), np.cos(phi))
        band = np.exp(-(((layout.fov_radius * 0.93 - dist) / Float(0.07 * size)) ** 2))
        glare += band * np.exp(-(phi**2) / Float(2 * rng.uniform(0.3, 0.7) ** 2))
        glare *= rng.uniform(0.35, 0.85)
    if rng.random() < 0.35:  # a soft lens reflection somewhere in the field
        centre = _away_from_disc(rng, layout, 2.5 * r)
        if centre is not None:
            blob = _gaussian(size, centre, r * rng.uniform(0.6, 1.4))
            glare += blob * rng.uniform(0.3, 0.7)
    return glare


def _field_of_view(layout: Layout) -> np.ndarray:
    """Circular aperture with a one-pixel soft rim."""
    dist = _distance(layout.size, layout.fov_centre)
    return np.clip(Float(layout.fov_radius) - dist + Float(0.5), 0, 1)


def _camera(rng: np.random.Generator, image: np.ndarray, layout: Layout) -> np.ndarray:
    """Blur, exposure, gamma, sensor noise and the aperture; return uint8 RGB."""
    if rng.random() < 0.3:
        sigma = rng.uniform(0.4, 1.3) * layout.size / 128
        image = cv2.GaussianBlur(image, (0, 0), sigma)
    image = image * Float(rng.uniform(0.7, 1.3))  # exposure shift
    image = np.clip(image, 0, 1) ** Float(rng.uniform(0.8, 1.25))
    image = image + Float(rng.uniform(0.004, 0.02)) * rng.standard_normal(image.shape, Float)
    image = np.clip(image, 0, 1) * _field_of_view(layout)[:, :, None]
    return np.round(image * 255).astype(np.uint8)


# --------------------------------------------------------------------------- public API


def draw_fundus(
    rng: np.random.Generator, size: int
) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """Draw one fundus photograph.

    Returns RGB uint8 (size, size, 3), the disc mask as bool (size, size) and the disc centre
    (x, y) in pixels; the mask's centroid lies within a pixel of the centre.
    """
    if size < MIN_SIZE:
        raise ValueError(f"size={size} is too small to draw a fundus; use size >= {MIN_SIZE}")
    layout = _sample_layout(rng, size)
    albedo = _choroid(rng, size)
    _add_fovea(rng, albedo, layout)
    rho = _add_disc(rng, albedo, layout)
    _add_exudates(rng, albedo, layout)
    _add_vessels(rng, albedo, layout)
    light = albedo * _illumination(rng, layout)[:, :, None]
    light += _reflections(rng, layout)[:, :, None] * np.array([1.0, 0.97, 0.9], Float)
    image = _camera(rng, light, layout)
    mask = rho <= 1
    centre = (float(layout.disc_centre[0]), float(layout.disc_centre[1]))
    return image, mask, centre


def _parameters(n_localize: int, n_segment: int, size: int, seed: int) -> dict:
    return {
        "generator_version": GENERATOR_VERSION,
        "n_localize": int(n_localize),
        "n_segment": int(n_segment),
        "size": int(size),
        "seed": int(seed),
    }


def _check_parameters(n_localize: int, n_segment: int, size: int, seed: int) -> None:
    if n_localize < 0 or n_segment < 0 or n_localize + n_segment == 0:
        raise ValueError(
            f"n_localize={n_localize}, n_segment={n_segment}: both must be >= 0 and at least "
            "one image must be drawn; pass e.g. --n-localize 300 --n-segment 60"
        )
    if size < MIN_SIZE:
        raise ValueError(f"size={size} is too small to draw a fundus; use --size >= {MIN_SIZE}")
    if seed < 0:
        raise ValueError(f"seed={seed} is negative; NumPy seeds must be >= 0, e.g. --seed 0")


def is_up_to_date(out_dir: str | Path, params: dict) -> bool:
    """True when ``out_dir`` holds a complete dataset drawn with exactly ``params``."""
    out = Path(out_dir)
    try:
        saved = json.loads((out / PARAMS_FILE).read_text())
    except (OSError, ValueError):
        return False
    counts = (_count_ours(out / "images"), _count_ours(out / "masks"))
    expected = (params["n_localize"] + params["n_segment"], params["n_segment"])
    return saved == params and counts == expected and (out / CENTERS_FILE).is_file()


def _count_ours(folder: Path) -> int:
    return sum(1 for p in folder.iterdir() if _OUR_FILE.match(p.name)) if folder.is_dir() else 0


def _clear_previous(out: Path) -> None:
    """Remove a previous synthetic set (ours: marked or named loc_/seg_); refuse anything else."""
    folders = [out / sub for sub in ("images", "masks") if (out / sub).is_dir()]
    files = [path for folder in folders for path in folder.iterdir()]
    foreign = [p for p in files if not _OUR_FILE.match(p.name) and not p.name.startswith(".")]
    if foreign and not (out / PARAMS_FILE).is_file():
        raise DatasetError(
            f"{out}: already holds images that the synthetic generator did not draw "
            f"(e.g. {foreign[0]}). Choose an empty OUT_DIR, or delete this folder first."
        )
    for sub in ("images", "masks"):
        shutil.rmtree(out / sub, ignore_errors=True)
    for name in (CENTERS_FILE, PARAMS_FILE):
        (out / name).unlink(missing_ok=True)


def generate_dataset(
    out_dir: str | Path,
    n_localize: int = 300,
    n_segment: int = 60,
    size: int = 128,
    seed: int = 0,
    *,
    progress: bool = True,
) -> Path:
    """Write the centre-only pool and the masked pool in the canonical format.

    Skips the work when ``out_dir`` already holds a complete set with the same parameters;
    ``synthetic.json`` is written last, so an interrupted run is redone, never half-trusted.
    """
    _check_parameters(n_localize, n_segment, size, seed)
    out = Path(out_dir)
    params = _parameters(n_localize, n_segment, size, seed)
    if is_up_to_date(out, params):
        return out
    _clear_previous(out)
    jobs = [(prefix, pool, i) for prefix, pool, key in POOLS for i in range(params[key])]
    width = max(4, len(str(max(n_localize, n_segment) - 1)))
    if progress:
        jobs = track(jobs, description=f"Drawing {len(jobs)} fundus images", transient=True)
    with DatasetWriter(out) as writer:
        for prefix, pool, index in jobs:
            image, mask, centre = draw_fundus(np.random.default_rng([seed, pool, index]), size)
            kept_mask = mask if prefix == "seg" else None
            writer.add(f"{prefix}_{index:0{width}d}", image, kept_mask, centre)
    write_json_atomic(out / PARAMS_FILE, params)
    return out


def _count(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is too small; use a value >= {minimum}")
        return value

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", type=Path, help="dataset folder to write (created if missing)")
    parser.add_argument(
        "--n-localize", type=_count(0), default=300, help="centre-only images (default 300)"
    )
    parser.add_argument(
        "--n-segment", type=_count(0), default=60, help="images with masks (default 60)"
    )
    parser.add_argument(
        "--size", type=_count(MIN_SIZE), default=128, help="image side in pixels (default 128)"
    )
    parser.add_argument("--seed", type=_count(0), default=0, help="random seed (default 0)")


def prepare(args: argparse.Namespace) -> dict:
    """Run :func:`generate_dataset` from parsed arguments; return a summary for printing."""
    params = _parameters(args.n_localize, args.n_segment, args.size, args.seed)
    cached = is_up_to_date(args.out_dir, params)
    start = time.perf_counter()
    if cached:
        Console(stderr=True).print(
            f"{args.out_dir}: already holds this synthetic set ({PARAMS_FILE} matches); skipped."
        )
    out = generate_dataset(args.out_dir, args.n_localize, args.n_segment, args.size, args.seed)
    return {
        "dataset": str(out),
        "status": "up to date (skipped)" if cached else "generated",
        "centre_only": args.n_localize,
        "with_mask": args.n_segment,
        "size": args.size,
        "seed": args.seed,
        "seconds": round(time.perf_counter() - start, 2),
    }
