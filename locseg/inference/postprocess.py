"""Post-processing of predicted disc masks and horizontal-flip test-time augmentation.

The optic disc is one solid blob, so two clean-ups are natural: keep the largest connected
component (drops false positives on bright lesions or reflections) and fill holes (a dark vessel
crossing the disc can punch one). Neither is free: an image whose disc was predicted in two
pieces loses one. nnU-Net therefore decides per dataset, on validation folds, whether a clean-up
is kept; :mod:`locseg.evaluation.postprocess` makes that decision. Horizontal-flip TTA averages the
probabilities of an image and of its mirror image (mirrored back), a cheap ensemble.

Masks here are boolean arrays of any 2-D shape (native photographs or network inputs);
probability batches are (B, ..., W) arrays whose last axis is x.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from locseg.options import switch

# 8-connectivity: pixels touching at a corner belong to one component.
_EIGHT = np.ones((3, 3), bool)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected foreground component (ties: the first found); empty stays empty."""
    mask = np.asarray(mask, dtype=bool)
    labels, count = ndimage.label(mask, structure=_EIGHT)
    if count <= 1:
        return mask.copy()
    sizes = np.bincount(labels.ravel())[1:]
    return labels == 1 + int(np.argmax(sizes))


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Background pixels enclosed by foreground become foreground."""
    return ndimage.binary_fill_holes(np.asarray(mask, dtype=bool))


def postprocess(mask: np.ndarray, largest: bool = True, fill: bool = True) -> np.ndarray:
    """The switched-on clean-ups, largest component first (a hole-free ring of noise is dropped)."""
    out = np.asarray(mask, dtype=bool)
    if largest:
        out = largest_component(out)
    if fill:
        out = fill_holes(out)
    return out


def hflip_tta(predict_fn: Callable[[np.ndarray], np.ndarray], images: np.ndarray) -> np.ndarray:
    """Mean of ``predict_fn(images)`` and the mirrored-back ``predict_fn(mirrored images)``.

    ``images`` is a batch whose last axis is x ((B, S, S) or (B, C, S, S)); ``predict_fn`` must
    return dense maps whose last axis is x too (segmentation probabilities). A centre regressor's
    (B, 2) output is not a map: mirror its u as 1 - u instead.
    """
    images = np.asarray(images)
    plain = np.asarray(predict_fn(images))
    mirrored = np.asarray(predict_fn(np.ascontiguousarray(images[..., ::-1])))
    if plain.ndim < 3 or plain.shape != mirrored.shape or plain.shape[-1] != images.shape[-1]:
        raise ValueError(
            f"hflip_tta needs dense (B, ..., W) maps with the images' width {images.shape[-1]}; "
            f"predict_fn returned {plain.shape}. Use it for segmentation probabilities only."
        )
    return (plain + mirrored[..., ::-1]) / 2.0


@dataclass(frozen=True)
class PostProcess:
    """The switches applied where a native mask is made: flip TTA, largest component, fill.

    ``tta`` acts on the network's probabilities, ``largest`` and ``fill`` on the thresholded
    native mask. All off is the raw prediction (``dice_native``).
    """

    largest: bool = False
    fill: bool = False
    tta: bool = False

    @classmethod
    def from_options(cls, options: Mapping | None) -> PostProcess:
        """``{largest, fill, tta}`` (e.g. a config node) -> switches; an unknown key is named."""
        values = dict(options or {})
        unknown = sorted(set(values) - set(SWITCHES))
        if unknown:
            raise ValueError(
                f"postprocess: unknown key(s) {unknown}; valid keys are {', '.join(SWITCHES)}"
            )
        return cls(**{k: switch(f"postprocess.{k}", v) for k, v in values.items()})

    def as_dict(self) -> dict[str, bool]:
        return asdict(self)

    @property
    def any(self) -> bool:
        return self.largest or self.fill or self.tta

    def apply(self, mask: np.ndarray) -> np.ndarray:
        """The mask clean-ups that are switched on (TTA happens before the threshold)."""
        if not (self.largest or self.fill):
            return np.asarray(mask, dtype=bool)
        return postprocess(mask, self.largest, self.fill)


# The order in which switches are decided: TTA changes the probabilities the clean-ups see.
SWITCHES = ("tta", "largest", "fill")
