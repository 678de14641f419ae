"""Predict on new photographs: masks, overlays and centers.csv at each photograph's own size.

What ``python -m locseg.predict`` runs (its module docstring describes the files): photographs are
decoded and batched (:mod:`locseg.inference.batches`), run through the checkpoints, mapped back
(:mod:`locseg.inference.native`) and written here.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from rich.console import Console
from rich.progress import Progress

from locseg.data.dataset import IMAGE_SUFFIXES, mask_centroid, write_image
from locseg.inference.batches import Loaded, batches, load_batch, run_models, whole_image_configs
from locseg.inference.checkpoints import Model, checkpoint_paths, load_models
from locseg.inference.native import to_native
from locseg.inference.options import InferenceError, InferenceOptions
from locseg.inference.postprocess import PostProcess
from locseg.io import write_text_atomic
from locseg.roi.geometry import Box

CSV_COLUMNS = (
    "image",
    "width",
    "height",
    "loc_x",
    "loc_y",
    "mask_x",
    "mask_y",
    "mask_area_px",
    "roi_x0",
    "roi_y0",
    "roi_side",
)


CONTOUR, LOC_MARK, MASK_MARK = (255, 220, 0), (255, 40, 40), (40, 160, 255)  # RGB


ROI_BOX = (200, 200, 200)  # RGB


def list_inputs(source: Path) -> tuple[list[Path], dict[str, str]]:
    """The images to process and, for a folder, files skipped for sharing an output stem."""
    if source.is_file():
        return [source], {}
    if not source.is_dir():
        raise InferenceError(f"input={source}: no such file or folder")
    images, skipped, stems = [], {}, {}
    for path in sorted(source.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if path.stem in stems:
            skipped[path.name] = (
                f"same stem as {stems[path.stem]}, so their outputs would collide; rename one"
            )
            continue
        stems[path.stem] = path.name
        images.append(path)
    if not images and not skipped:
        raise InferenceError(f"input={source}: no images ({', '.join(IMAGE_SUFFIXES)}) in it")
    return images, skipped


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def csv_row(
    name: str,
    size_wh: tuple[int, int],
    loc: np.ndarray | None,
    centroid: tuple[float, float] | None,
    area: int | None,
    box: Box | None = None,
) -> dict[str, str]:
    """One centers.csv row; cells that do not apply stay empty."""
    loc_xy = (None, None) if loc is None else (float(loc[0]), float(loc[1]))
    mask_xy = centroid or (None, None)
    return {
        "image": name,
        "width": str(size_wh[0]),
        "height": str(size_wh[1]),
        "loc_x": _fmt(loc_xy[0]),
        "loc_y": _fmt(loc_xy[1]),
        "mask_x": _fmt(mask_xy[0]),
        "mask_y": _fmt(mask_xy[1]),
        "mask_area_px": "" if area is None else str(area),
        **roi_cells(box),
    }


def roi_cells(box: Box | None) -> dict[str, str]:
    """The crop's box in native px, or empty cells for a whole-photograph segmenter."""
    values = box.as_list() if box is not None else ["", "", ""]
    return {f"roi_{k}": str(v) for k, v in zip(("x0", "y0", "side"), values, strict=True)}


def draw_overlay(
    image: np.ndarray,
    mask: np.ndarray | None,
    loc: np.ndarray | None,
    centroid: tuple[float, float] | None,
    box: Box | None = None,
) -> np.ndarray:
    """The photograph (RGB, native size) with the mask contour, the centre markers and the crop."""
    canvas = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB) if image.ndim == 2 else image.copy()
    thickness = max(1, round(min(canvas.shape[:2]) / 300))
    marker = max(7, min(canvas.shape[:2]) // 20)
    if box is not None:
        corner = (box.x0 + box.side - 1, box.y0 + box.side - 1)
        cv2.rectangle(canvas, (box.x0, box.y0), corner, ROI_BOX, thickness)
    if mask is not None:
        contours, _ = cv2.findContours(
            mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
        )
        cv2.drawContours(canvas, contours, -1, CONTOUR, thickness)
    points = [(centroid, MASK_MARK, cv2.MARKER_DIAMOND), (loc, LOC_MARK, cv2.MARKER_CROSS)]
    for point, colour, shape in points:
        if point is not None and np.isfinite(point).all():
            xy = (round(float(point[0])), round(float(point[1])))
            cv2.drawMarker(canvas, xy, colour, shape, marker, thickness)
    return canvas


def save_image_outputs(
    output: Path,
    item: Loaded,
    outputs: dict[str, np.ndarray],
    threshold: float,
    post: PostProcess | None = None,
) -> dict[str, str]:
    """Write the mask and overlay of one image; return its CSV row."""
    height, width = item.image.shape[:2]
    native = to_native(outputs, (width, height), threshold, post)
    loc, mask, box = native.center, native.mask, native.box
    centroid = mask_centroid(mask) if mask is not None and mask.any() else None
    if mask is not None:
        write_image(output / "masks" / f"{item.path.stem}.png", mask.astype(np.uint8) * 255)
    overlay = draw_overlay(item.image, mask, loc, centroid, box)
    write_image(output / "overlays" / f"{item.path.stem}.png", overlay)
    area = None if mask is None else int(mask.sum())
    return csv_row(item.path.name, (width, height), loc, centroid, area, box)


def write_centers(path: Path, rows: Sequence[dict[str, str]]) -> Path:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return write_text_atomic(path, buffer.getvalue())


def predict(
    ckpts: str | Path | Sequence[str | Path],
    input: str | Path,
    output: str | Path,
    batch_size: int = 16,
    device: str = "auto",
    threshold: float = 0.5,
    console: Console | None = None,
    post: PostProcess | None = None,
) -> dict:
    """Predict every image under ``input``; write masks, overlays and centers.csv to ``output``.

    ``post``: the segmenter's flip TTA and mask clean-ups (all off by default). Returns a
    summary: counts, ``skipped`` (file name -> reason) and where the outputs are.
    """
    options = InferenceOptions(batch_size, device, threshold, post or PostProcess())
    return predict_with(ckpts, input, output, options, console)


def predict_with(
    ckpts: str | Path | Sequence[str | Path],
    input: str | Path,
    output: str | Path,
    options: InferenceOptions,
    console: Console | None = None,
) -> dict:
    """:func:`predict` with its options checked already."""
    batch_size, threshold, post = options.batch_size, options.threshold, options.post
    target = options.target()
    images, skipped = list_inputs(Path(input).expanduser())
    models = load_models(checkpoint_paths(ckpts), target)
    output = Path(output).expanduser()
    configs = whole_image_configs(models)
    rows = []
    with Progress(console=console, transient=False) as progress:
        task = progress.add_task("Predicting", total=len(images))
        for chunk in batches(images, batch_size):
            loaded = load_batch(chunk, configs, skipped)
            if loaded:
                outputs = run_models(models, loaded, target, post.tta)
                for i, item in enumerate(loaded):
                    per_image = {role: values[i] for role, values in outputs.items()}
                    rows.append(save_image_outputs(output, item, per_image, threshold, post))
            progress.advance(task, len(chunk))
    return {**summarise(output, models, rows, skipped, target), "postprocess": post.as_dict()}


def summarise(
    output: Path,
    models: dict[str, Model],
    rows: list[dict[str, str]],
    skipped: dict[str, str],
    device: torch.device,
) -> dict:
    """Write centers.csv (if anything was processed) and describe the run."""
    centers = write_centers(output / "centers.csv", rows) if rows else None
    return {
        "processed": len(rows),
        "skipped": dict(sorted(skipped.items())),
        "models": {role: str(model.path) for role, model in models.items()},
        "device": str(device),
        "output": str(output),
        "centers_csv": str(centers) if centers else None,
        "masks": str(output / "masks") if rows and "segmenter" in models else None,
        "overlays": str(output / "overlays") if rows else None,
    }
