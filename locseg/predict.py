"""``python -m locseg.predict ckpt=PATH input=DIR_OR_FILE output=DIR``: masks and centres

``ckpt`` is a localizer or segmenter Lightning checkpoint (``RUN/checkpoints/best.ckpt``), or
both as ``ckpt=[loc.ckpt,seg.ckpt]``. Each image is preprocessed exactly as in training, from the
parameters stored with the checkpoint, and the results are mapped back to its native size::

    OUTPUT/masks/<stem>.png      0/255 disc mask at native resolution (segmenter)
    OUTPUT/overlays/<stem>.png   mask contour and centre(s) drawn on the photograph
    OUTPUT/centers.csv           image,width,height,loc_x,loc_y,mask_x,mask_y,mask_area_px,
                                 roi_x0,roi_y0,roi_side

A segmenter trained on disc-centred crops (``data.roi``) needs its localizer too: each photograph
is cropped around the localizer's centre (the side stored in the segmenter's checkpoint), the
crop is segmented and its mask pasted back into the photograph; ``roi_*`` give the crop's box in
native px (empty for a whole-photograph segmenter), and the overlay draws it.

Optional keys: ``batch_size=16 device=auto|cpu|cuda threshold=0.5`` and the segmenter's
post-processing ``tta=false largest=false fill=false`` (horizontal-flip TTA, keep the largest
component, fill holes; a training run's metrics.json says which ones its validation images chose,
``postprocess_choice``). A ``crop_fov`` model's outputs go back through each photograph's
field-of-view square. An unreadable image is reported and skipped. Exit 0 when at least one image
was processed, 1 otherwise.
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from omegaconf import MISSING, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException
from rich.console import Console
from rich.progress import Progress

import locseg  # noqa: F401  (sets the no-network environment defaults first)
from locseg.data.dataset import IMAGE_SUFFIXES, mask_centroid, write_image
from locseg.inference.batches import (
    Loaded,
    batches,
    load_batch,
    load_input,
    run_models,
    whole_image_configs,
)
from locseg.inference.checkpoints import Model, checkpoint_paths, load_models
from locseg.inference.native import native_mask, to_native
from locseg.inference.options import InferenceError, check_options, resolve_device
from locseg.inference.postprocess import PostProcess
from locseg.io import write_text_atomic
from locseg.roi.geometry import Box

__all__ = ["PredictError", "load_input", "main", "native_mask", "parse_args", "predict"]

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

# One error type for the command: bad arguments here, bad checkpoints in locseg.inference.
PredictError = InferenceError


@dataclass
class PredictConfig:
    """The command line, as ``key=value`` pairs."""

    ckpt: Any = MISSING  # one path or a list [loc.ckpt,seg.ckpt]
    input: str = MISSING
    output: str = MISSING
    batch_size: int = 16
    device: str = "auto"
    threshold: float = 0.5
    largest: bool = False
    fill: bool = False
    tta: bool = False


# --------------------------------------------------------------------------- arguments


def parse_args(argv: Sequence[str]) -> PredictConfig:
    """``key=value`` pairs -> PredictConfig; an unknown key or a missing one is a PredictError."""
    valid = ", ".join(f.name for f in fields(PredictConfig))
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(PredictConfig), OmegaConf.from_cli(list(argv)))
    except ConfigKeyError as error:
        key = getattr(error, "key", None) or str(error).splitlines()[0]
        raise PredictError(f"unknown key {key!r}; valid keys are: {valid}") from None
    except OmegaConfBaseException as error:
        raise PredictError(f"bad argument: {str(error).splitlines()[0]}") from None
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise PredictError(
            f"missing {', '.join(f'{k}=...' for k in missing)}. Usage: python -m locseg.predict "
            "ckpt=RUN/checkpoints/best.ckpt input=DIR_OR_FILE output=DIR"
        )
    return PredictConfig(**OmegaConf.to_container(cfg))


# --------------------------------------------------------------------------- inputs


def list_inputs(source: Path) -> tuple[list[Path], dict[str, str]]:
    """The images to process and, for a folder, files skipped for sharing an output stem."""
    if source.is_file():
        return [source], {}
    if not source.is_dir():
        raise PredictError(f"input={source}: no such file or folder")
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
        raise PredictError(f"input={source}: no images ({', '.join(IMAGE_SUFFIXES)}) in it")
    return images, skipped


# --------------------------------------------------------------------------- per image


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


# --------------------------------------------------------------------------- the run


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
    post = post or PostProcess()
    check_options(batch_size, threshold)
    target = resolve_device(device)
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


def print_summary(summary: dict, console: Console) -> None:
    console.print(f"[bold]Processed {summary['processed']} image(s)[/] on {summary['device']}")
    for name, reason in summary["skipped"].items():
        console.print(f"  [red]skipped[/] {name}: {reason}", highlight=False, soft_wrap=True)
    for key in ("centers_csv", "masks", "overlays"):
        if summary[key]:
            console.print(f"  {key}: {summary[key]}", highlight=False)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    console = Console()
    if {"-h", "--help", "help"} & set(argv):
        console.print(__doc__, highlight=False)
        return 0
    try:
        cfg = parse_args(argv)
        post = PostProcess(cfg.largest, cfg.fill, cfg.tta)
        options = (cfg.batch_size, cfg.device, cfg.threshold, console, post)
        summary = predict(cfg.ckpt, cfg.input, cfg.output, *options)
    except PredictError as error:
        console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        return 1
    print_summary(summary, console)
    return 0 if summary["processed"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
