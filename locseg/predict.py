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

import sys
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from omegaconf import MISSING, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException
from rich.console import Console

import locseg  # noqa: F401  (sets the no-network environment defaults first)
from locseg.inference.options import InferenceError, InferenceOptions
from locseg.inference.outputs import predict, predict_with
from locseg.inference.postprocess import PostProcess

__all__ = ["PredictError", "main", "parse_args", "predict"]

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

    def options(self) -> InferenceOptions:
        """The options shared with ``locseg.evaluate``, checked."""
        post = PostProcess(self.largest, self.fill, self.tta)
        return InferenceOptions(self.batch_size, self.device, self.threshold, post)


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
        summary = predict_with(cfg.ckpt, cfg.input, cfg.output, cfg.options(), console)
    except PredictError as error:
        console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        return 1
    print_summary(summary, console)
    return 0 if summary["processed"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
