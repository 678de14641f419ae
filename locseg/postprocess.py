"""Post-processing of predicted disc masks and horizontal-flip test-time augmentation.

The optic disc is one solid blob, so two clean-ups are natural: keep the largest connected
component (drops false positives on bright lesions or reflections) and fill holes (a dark vessel
crossing the disc can punch one). Neither is free: an image whose disc was predicted in two
pieces loses one. nnU-Net therefore decides per dataset, on validation folds, whether a clean-up
is kept; :func:`choose_postprocessing` is that decision. Horizontal-flip TTA averages the
probabilities of an image and of its mirror image (mirrored back), a cheap ensemble.

Masks here are boolean arrays of any 2-D shape (native photographs or network inputs);
probability batches are (B, ..., W) arrays whose last axis is x.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
from scipy import ndimage

from locseg.options import switch, word

# 8-connectivity: pixels touching at a corner belong to one component.
_EIGHT = np.ones((3, 3), bool)
WORSE_MARGIN = 0.01  # choose_postprocessing: largest per-image Dice loss a clean-up may cause


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


def choose_postprocessing(
    per_image_dice_with: Mapping[str, float] | Sequence[float],
    per_image_dice_without: Mapping[str, float] | Sequence[float],
    margin: float = WORSE_MARGIN,
) -> bool:
    """Keep a clean-up only if it raises the mean validation Dice and hurts no image much.

    The rule (after nnU-Net's, which keeps a post-processing step when it improves the mean
    validation Dice): enable when the mean paired Dice difference is positive **and** no single
    image loses more than ``margin`` (default 0.01). The second condition guards a small
    validation set against a clean-up that helps most images a little and ruins one (e.g. a disc
    predicted in two halves). Ties (no change) keep it off: a step that does nothing is not run.
    Mappings are paired by image id; sequences by position.
    """
    with_, without = _paired(per_image_dice_with, per_image_dice_without)
    difference = with_ - without
    return bool(difference.mean() > 0.0 and difference.min() >= -margin)


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


def choose_switches(
    per_image: Mapping[str, Mapping[PostProcess, float]],
    fixed: Mapping[str, bool] | None = None,
    margin: float = WORSE_MARGIN,
) -> tuple[PostProcess, list[dict]]:
    """Decide each switch in turn on validation Dice, keeping the ones already chosen.

    ``per_image[id][switches]`` is image ``id``'s Dice with those switches (all eight
    combinations). In the order of ``SWITCHES`` each step compares the state so far with and
    without the next switch by :func:`choose_postprocessing`; a switch named in ``fixed`` is set
    as given instead (``source: config``). Returns the switches and one record per step: mean
    Dice without and with the switch, and whether it is on.
    """
    fixed = dict(fixed or {})
    state, steps = PostProcess(), []
    for name in SWITCHES:
        candidate = replace(state, **{name: True})
        without = {i: scores[state] for i, scores in per_image.items()}
        with_ = {i: scores[candidate] for i, scores in per_image.items()}
        if name in fixed:
            chosen, source = bool(fixed[name]), "config"
        else:
            chosen, source = choose_postprocessing(with_, without, margin), "validation"
        steps.append(
            {
                "switch": name,
                "val_dice_without": float(np.mean(list(without.values()))),
                "val_dice_with": float(np.mean(list(with_.values()))),
                "chosen": chosen,
                "source": source,
            }
        )
        if chosen:
            state = candidate
    return state, steps


def switch_options(options: Mapping | None) -> dict[str, bool]:
    """Training's ``postprocess`` node (each switch ``auto``, true or false) -> the fixed ones.

    ``auto`` (the default) leaves the switch to the validation images.
    """
    values = dict(options or {})
    unknown = sorted(set(values) - set(SWITCHES))
    if unknown:
        raise ValueError(
            f"postprocess: unknown key(s) {unknown}; valid keys are {', '.join(SWITCHES)}, "
            "each auto (chosen on validation images), true or false"
        )
    fixed = {}
    for name, value in values.items():
        chosen = word(f"postprocess.{name}", value, ("auto", "true", "false"))
        if chosen != "auto":
            fixed[name] = chosen == "true"
    return fixed


def _paired(a, b) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(a, Mapping) != isinstance(b, Mapping):
        raise ValueError("give both per-image Dice sets as mappings (id -> Dice) or both as lists")
    if isinstance(a, Mapping):
        if set(a) != set(b):
            missing = sorted(set(a) ^ set(b))[:5]
            raise ValueError(f"the two Dice sets cover different images, e.g. {missing}")
        keys = sorted(a)
        a, b = [a[k] for k in keys], [b[k] for k in keys]
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(
            f"per-image Dice must be two equally long, non-empty lists; got {a.shape} and {b.shape}"
        )
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("per-image Dice contains NaN or inf; score every image first")
    return a, b
