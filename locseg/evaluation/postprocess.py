"""Which post-processing to use, chosen on validation images (never test).

nnU-Net decides per dataset, on validation folds, whether a clean-up is kept;
:func:`choose_postprocessing` is that decision; :func:`choose_switches` applies it to flip TTA,
largest component and hole filling in turn
(:class:`locseg.inference.postprocess.PostProcess`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np

from locseg.inference.postprocess import SWITCHES, PostProcess
from locseg.options import word

WORSE_MARGIN = 0.01  # choose_postprocessing: largest per-image Dice loss a clean-up may cause


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
