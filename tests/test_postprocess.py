"""Post-processing and flip TTA on known masks and known functions (issue #10.4)."""

from __future__ import annotations

import numpy as np
import pytest

from locseg.evaluation.postprocess import choose_postprocessing
from locseg.inference.postprocess import fill_holes, hflip_tta, largest_component, postprocess


def _disc(size: int, cx: float, cy: float, radius: float) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2


def test_largest_component_keeps_the_bigger_blob():
    big, small = _disc(48, 14, 14, 8), _disc(48, 36, 36, 4)
    out = largest_component(big | small)
    assert out.dtype == bool
    np.testing.assert_array_equal(out, big)


def test_diagonal_neighbours_are_one_component():
    mask = np.zeros((6, 6), bool)
    mask[1, 1] = mask[2, 2] = mask[3, 3] = True
    mask[5, 0] = True
    assert largest_component(mask).sum() == 3


def test_empty_mask_stays_empty():
    empty = np.zeros((8, 8), bool)
    assert not largest_component(empty).any()
    assert not postprocess(empty).any()


def test_fill_holes_turns_a_ring_into_a_disc():
    ring = _disc(40, 20, 20, 12) & ~_disc(40, 20, 20, 6)
    np.testing.assert_array_equal(fill_holes(ring), _disc(40, 20, 20, 12))


def test_postprocess_switches():
    ring = _disc(48, 14, 14, 9) & ~_disc(48, 14, 14, 4)
    speck = _disc(48, 40, 40, 2)
    mask = ring | speck
    np.testing.assert_array_equal(postprocess(mask, largest=False, fill=False), mask)
    np.testing.assert_array_equal(postprocess(mask, largest=True, fill=False), ring)
    np.testing.assert_array_equal(postprocess(mask, largest=False, fill=True), fill_holes(mask))
    np.testing.assert_array_equal(postprocess(mask), _disc(48, 14, 14, 9))


def test_tta_of_a_flip_equivariant_function_is_the_function():
    images = np.random.default_rng(0).random((3, 16, 16)).astype(np.float32)

    def blur_rows(batch):  # symmetric in x: commutes with the mirror
        return (np.roll(batch, 1, -1) + batch + np.roll(batch, -1, -1)) / 3

    np.testing.assert_allclose(hflip_tta(blur_rows, images), blur_rows(images), atol=1e-6)


def test_tta_of_an_asymmetric_function_is_the_average():
    images = np.random.default_rng(1).random((2, 1, 8, 8))

    def shift_right(batch):  # not equivariant: the mirrored pass shifts left
        return np.roll(batch, 1, axis=-1)

    expected = (np.roll(images, 1, axis=-1) + np.roll(images, -1, axis=-1)) / 2
    np.testing.assert_allclose(hflip_tta(shift_right, images), expected)


def test_tta_refuses_centre_regressors():
    with pytest.raises(ValueError, match="segmentation probabilities only"):
        hflip_tta(lambda batch: np.zeros((len(batch), 2)), np.zeros((2, 8, 8)))


def test_choose_postprocessing_rule():
    without = [0.80, 0.90, 0.85]
    assert choose_postprocessing([0.82, 0.91, 0.85], without) is True
    assert choose_postprocessing(without, without) is False, "no change: keep it off"
    assert choose_postprocessing([0.79, 0.90, 0.85], without) is False, "mean down"
    # mean up by 0.05, but one image ruined: refused
    assert choose_postprocessing([0.95, 0.99, 0.80], without) is False
    assert choose_postprocessing([0.95, 0.99, 0.80], without, margin=0.1) is True
    assert choose_postprocessing({"b": 0.9, "a": 0.7}, {"a": 0.6, "b": 0.9}) is True


def test_choose_postprocessing_errors_name_the_problem():
    with pytest.raises(ValueError, match="different images"):
        choose_postprocessing({"a": 0.9}, {"b": 0.9})
    with pytest.raises(ValueError, match="equally long"):
        choose_postprocessing([0.9, 0.8], [0.9])
    with pytest.raises(ValueError, match="NaN"):
        choose_postprocessing([float("nan")], [0.9])
    with pytest.raises(ValueError, match="as mappings .* or both as lists"):
        choose_postprocessing({"a": 0.9}, [0.9])


def test_training_switches_are_auto_true_or_false():
    from locseg.evaluation.postprocess import switch_options
    from locseg.inference.postprocess import PostProcess

    assert switch_options({"tta": "auto", "largest": True, "fill": False}) == {
        "largest": True,
        "fill": False,
    }
    assert switch_options(None) == {}
    with pytest.raises(ValueError, match="fill='maybe' is not one of auto, true, false"):
        switch_options({"fill": "maybe"})
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['holes'\]"):
        switch_options({"holes": True})
    assert PostProcess.from_options({"largest": 1}) == PostProcess(largest=True)
    with pytest.raises(ValueError, match="valid keys are tta, largest, fill"):
        PostProcess.from_options({"flip": True})


def test_switches_are_decided_in_order_on_paired_validation_dice():
    from locseg.evaluation.postprocess import choose_switches
    from locseg.inference.postprocess import PostProcess

    # TTA gains everywhere; largest gains on top of it only on a; fill never changes anything.
    table = {}
    for image, gain in (("a", 0.05), ("b", 0.0)):
        table[image] = {}
        for tta in (False, True):
            for largest in (False, True):
                for fill in (False, True):
                    score = 0.8 + 0.02 * tta + (gain if largest and tta else 0.0)
                    table[image][PostProcess(largest, fill, tta)] = score
    chosen, steps = choose_switches(table)
    assert chosen == PostProcess(largest=True, tta=True)
    assert [s["switch"] for s in steps] == ["tta", "largest", "fill"]
    assert steps[1]["val_dice_without"] == pytest.approx(0.82)
    assert steps[1]["val_dice_with"] == pytest.approx(0.845)
    fixed, _ = choose_switches(table, fixed={"tta": False, "fill": True})
    assert fixed == PostProcess(fill=True)  # largest gains nothing without TTA here
