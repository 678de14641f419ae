"""``python -m locseg.predict ckpt=PATH input=DIR_OR_FILE output=DIR``: masks and centres

``ckpt`` is a localizer or segmenter Lightning checkpoint (``RUN/checkpoints/best.ckpt``), or
both as ``ckpt=[loc.ckpt,seg.ckpt]``. Each image is preprocessed exactly as in training, from the
parameters stored with the checkpoint, and the results are mapped back to its native size::

    OUTPUT/masks/<stem>.png      0/255 disc mask at native resolution (segmenter)
    OUTPUT/overlays/<stem>.png   mask contour and centre(s) drawn on the photograph
    OUTPUT/centers.csv           image,width,height,loc_x,loc_y,mask_x,mask_y,mask_area_px

Optional keys: ``batch_size=16 device=auto|cpu|cuda threshold=0.5``. An unreadable image is
reported and skipped. Exit 0 when at least one image was processed, 1 otherwise.
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import MISSING, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException
from rich.console import Console
from rich.progress import Progress

import locseg  # noqa: F401  (sets the no-network environment defaults first)
from locseg.data.dataset import (
    IMAGE_SUFFIXES,
    DatasetError,
    mask_centroid,
    read_image,
    write_image,
)
from locseg.data.preprocess import PreprocessConfig, native_center, preprocess_image
from locseg.io import write_text_atomic
from locseg.models.localizer import LocalizerModule
from locseg.models.segmenter import SegmenterModule

CSV_COLUMNS = (
    "image",
    "width",
    "height",
    "loc_x",
    "loc_y",
    "mask_x",
    "mask_y",
    "mask_area_px",
)
CONTOUR, LOC_MARK, MASK_MARK = (255, 220, 0), (255, 40, 40), (40, 160, 255)  # RGB
ROLES = {"localizer": LocalizerModule, "segmenter": SegmenterModule}


class PredictError(ValueError):
    """Bad arguments or checkpoints; the message names the value and the fix."""


@dataclass
class PredictConfig:
    """The command line, as ``key=value`` pairs."""

    ckpt: Any = MISSING  # one path or a list [loc.ckpt,seg.ckpt]
    input: str = MISSING
    output: str = MISSING
    batch_size: int = 16
    device: str = "auto"
    threshold: float = 0.5


@dataclass
class Model:
    """A loaded network and the preprocessing it was trained with."""

    role: str
    module: pl.LightningModule
    preprocess: PreprocessConfig
    path: Path


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


def checkpoint_paths(ckpt: str | Sequence[str]) -> list[Path]:
    paths = [ckpt] if isinstance(ckpt, str | Path) else list(ckpt)
    if not paths:
        raise PredictError("ckpt=[] names no checkpoint; give ckpt=PATH or ckpt=[LOC,SEG]")
    return [Path(str(p)).expanduser() for p in paths]


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when there is one; asking for CUDA without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name != "cpu" and not name.startswith("cuda"):
        raise PredictError(f"device={name!r} is not one of auto, cpu, cuda (or cuda:N)")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PredictError(f"device={name} but CUDA is not available here; use device=cpu")
    return torch.device(name)


def check_options(batch_size: int, threshold: float) -> None:
    if batch_size < 1:
        raise PredictError(f"batch_size={batch_size} must be at least 1")
    if not 0.0 <= threshold <= 1.0:
        raise PredictError(f"threshold={threshold} must lie in [0, 1] (it cuts a probability)")


# --------------------------------------------------------------------------- checkpoints


def read_hparams(path: Path) -> dict:
    """The hyper-parameters saved in a Lightning checkpoint; errors name the file."""
    if not path.is_file():
        raise PredictError(
            f"{path}: checkpoint not found. Training writes RUN/checkpoints/best.ckpt "
            "and last.ckpt; pass one of those."
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a damaged or foreign file
        raise PredictError(f"{path}: cannot read this checkpoint ({error})") from None
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    if not hparams:
        raise PredictError(
            f"{path}: not a locseg Lightning checkpoint (no saved hyper-parameters); an "
            "encoder.pt is not enough. Pass RUN/checkpoints/best.ckpt of a training run."
        )
    return dict(hparams)


def checkpoint_role(hparams: dict) -> str:
    """The segmenter saves ``init``/``freeze_encoder``; the localizer does not."""
    return "segmenter" if {"init", "freeze_encoder"} & set(hparams) else "localizer"


def stored_preprocess(path: Path, hparams: dict) -> PreprocessConfig:
    """The preprocessing the model was trained with, checked against its input size."""
    size = int(hparams.get("input_size") or PreprocessConfig.image_size)
    try:
        config = PreprocessConfig(**(hparams.get("preprocess") or {"image_size": size}))
    except TypeError as error:
        raise PredictError(f"{path}: unknown preprocessing parameters ({error})") from None
    if config.image_size != size:
        raise PredictError(
            f"{path}: preprocess.image_size={config.image_size} but input_size={size}; "
            "this checkpoint is inconsistent, retrain it."
        )
    return config


def load_model(path: Path, device: torch.device) -> Model:
    """Load one checkpoint on ``device`` in eval mode.

    A segmenter initialised from a localizer is rebuilt as ``init=scratch``: its weights come from
    the checkpoint, so the original encoder.pt need not exist any more.
    """
    hparams = read_hparams(path)
    role = checkpoint_role(hparams)
    overrides = {"init": "scratch", "encoder_ckpt": None} if role == "segmenter" else {}
    try:
        module = ROLES[role].load_from_checkpoint(
            path, map_location=device, weights_only=True, **overrides
        )
    except Exception as error:
        raise PredictError(f"{path}: cannot load this {role} checkpoint ({error})") from None
    return Model(role, module.to(device).eval(), stored_preprocess(path, hparams), path)


def load_models(paths: Sequence[Path], device: torch.device) -> dict[str, Model]:
    """At most one localizer and one segmenter, keyed by role."""
    models: dict[str, Model] = {}
    for path in paths:
        model = load_model(path, device)
        if model.role in models:
            raise PredictError(
                f"{path} and {models[model.role].path} are both {model.role}s; "
                "give at most one localizer and one segmenter"
            )
        models[model.role] = model
    return models


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


def batches(items: Sequence[Path], size: int) -> Iterator[Sequence[Path]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass
class Loaded:
    """One decoded photograph and its network input for each preprocessing in use."""

    path: Path
    image: np.ndarray
    inputs: dict[PreprocessConfig, np.ndarray]


def load_input(path: Path, configs: set[PreprocessConfig]) -> Loaded:
    image = read_image(path)
    return Loaded(path, image, {config: preprocess_image(image, config) for config in configs})


def first_sentence(message: str) -> str:
    """The reason without the dataset-folder advice that follows it."""
    return message.strip().split(". ")[0].removesuffix(".")


def load_batch(
    paths: Sequence[Path], configs: set[PreprocessConfig], skipped: dict[str, str]
) -> list[Loaded]:
    """Decode and preprocess what can be; record the rest in ``skipped`` with the reason."""
    loaded = []
    for path in paths:
        try:
            loaded.append(load_input(path, configs))
        except (DatasetError, cv2.error, ValueError) as error:
            skipped[path.name] = first_sentence(str(error).removeprefix(f"{path}: "))
    return loaded


@torch.inference_mode()
def run_models(
    models: dict[str, Model], batch: Sequence[Loaded], device: torch.device
) -> dict[str, np.ndarray]:
    """Role -> outputs on the CPU: localizer (B, 2) normalised centres, segmenter (B, S, S).

    Inputs are (B, 1, S, S) floats in [0, 1], exactly as the training cache feeds them.
    """
    outputs = {}
    for role, model in models.items():
        stack = np.stack([item.inputs[model.preprocess] for item in batch])
        images = torch.from_numpy(stack).to(device).unsqueeze(1).float().div_(255.0)
        result = model.module(images).float().cpu().numpy()
        outputs[role] = result[:, 0] if role == "segmenter" else result
    return outputs


# --------------------------------------------------------------------------- per image


def native_mask(prob: np.ndarray, size_wh: tuple[int, int], threshold: float) -> np.ndarray:
    """(S, S) probabilities -> bool (H, W): bilinear back to the native size, then threshold."""
    native = cv2.resize(prob.astype(np.float32), size_wh, interpolation=cv2.INTER_LINEAR)
    return native > threshold


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def csv_row(
    name: str,
    size_wh: tuple[int, int],
    loc: np.ndarray | None,
    centroid: tuple[float, float] | None,
    area: int | None,
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
    }


def draw_overlay(
    image: np.ndarray,
    mask: np.ndarray | None,
    loc: np.ndarray | None,
    centroid: tuple[float, float] | None,
) -> np.ndarray:
    """The photograph (RGB, native size) with the mask contour and the centre markers."""
    canvas = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB) if image.ndim == 2 else image.copy()
    thickness = max(1, round(min(canvas.shape[:2]) / 300))
    marker = max(7, min(canvas.shape[:2]) // 20)
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
    output: Path, item: Loaded, outputs: dict[str, np.ndarray], threshold: float
) -> dict[str, str]:
    """Write the mask and overlay of one image; return its CSV row."""
    height, width = item.image.shape[:2]
    loc = outputs.get("localizer")
    loc = None if loc is None else native_center(loc, (width, height))
    prob = outputs.get("segmenter")
    mask = None if prob is None else native_mask(prob, (width, height), threshold)
    centroid = mask_centroid(mask) if mask is not None and mask.any() else None
    if mask is not None:
        write_image(output / "masks" / f"{item.path.stem}.png", mask.astype(np.uint8) * 255)
    overlay = draw_overlay(item.image, mask, loc, centroid)
    write_image(output / "overlays" / f"{item.path.stem}.png", overlay)
    area = None if mask is None else int(mask.sum())
    return csv_row(item.path.name, (width, height), loc, centroid, area)


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
) -> dict:
    """Predict every image under ``input``; write masks, overlays and centers.csv to ``output``.

    Returns a summary: counts, ``skipped`` (file name -> reason) and where the outputs are.
    """
    check_options(batch_size, threshold)
    target = resolve_device(device)
    images, skipped = list_inputs(Path(input).expanduser())
    models = load_models(checkpoint_paths(ckpts), target)
    output = Path(output).expanduser()
    configs = {model.preprocess for model in models.values()}
    rows = []
    with Progress(console=console, transient=False) as progress:
        task = progress.add_task("Predicting", total=len(images))
        for chunk in batches(images, batch_size):
            loaded = load_batch(chunk, configs, skipped)
            if loaded:
                outputs = run_models(models, loaded, target)
                for i, item in enumerate(loaded):
                    per_image = {role: values[i] for role, values in outputs.items()}
                    rows.append(save_image_outputs(output, item, per_image, threshold))
            progress.advance(task, len(chunk))
    return summarise(output, models, rows, skipped, target)


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
        summary = predict(
            cfg.ckpt, cfg.input, cfg.output, cfg.batch_size, cfg.device, cfg.threshold, console
        )
    except PredictError as error:
        console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        return 1
    print_summary(summary, console)
    return 0 if summary["processed"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
