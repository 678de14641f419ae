"""The crop-scale localizer's data: windows around the disc at the segmenter's scale."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_dataset

from locseg.data.dataset import DatasetError, read_image
from locseg.models.localizer import localization_errors
from locseg.roi.datamodule import RoiSegmentationDataModule, true_centres
from locseg.roi.geometry import Box, box_around, crop_input
from locseg.roi.localization import LOCALIZER_ENTRY, RoiLocalizationDataModule

SIZE = 32  # the window (network input) in px
ROI = {"side_diameters": 2.0, "localizer_crops": True, "localizer_jitter": 0.25}


def crop_module(tmp_path, roi: dict, **kwargs) -> RoiLocalizationDataModule:
    root = kwargs.pop("root", None) or make_dataset(tmp_path / "d", n_masked=12, size=96)
    module = RoiLocalizationDataModule(
        root=str(root),
        image_size=SIZE,
        batch_size=4,
        num_folds=3,
        cache_dir=str(tmp_path / "cache"),
        roi=roi,
        **kwargs,
    )
    module.prepare_data()
    module.setup("fit")
    return module


@pytest.fixture
def module(tmp_path) -> RoiLocalizationDataModule:
    return crop_module(tmp_path, ROI)


def native_centre(item: dict) -> np.ndarray:
    """The item's target mapped back to native px through its window (box and frame_size)."""
    frame = item["frame_size"].numpy().astype(np.float64)
    return item["center"].numpy() * frame - 0.5 + item["box"][:2].numpy()


def truths(module, part: str) -> list[np.ndarray]:
    crops, data = module.part_crops(part)[0]
    centres = true_centres(data, crops.ids)
    return [np.asarray(centres[i]) for i in crops.ids]


# --------------------------------------------------------------------------- the crop side


def test_side_is_diameters_times_the_median_training_mask_diameter(module):
    diameters = [2.0 * data.radii[row] for data, row in module.items("train")]
    assert module.diameter_px == pytest.approx(float(np.median(diameters)))
    assert module.side_px == round(2.0 * module.diameter_px)
    facts = module.crop_facts()
    assert facts["side_px"] == module.side_px and facts["crop_size"] == SIZE
    assert facts["jitter"] == 0.25 and facts["diameter_source"] == "train masks"
    assert module.state_dict() == {LOCALIZER_ENTRY: facts}


def test_given_diameter_and_side_px_win(tmp_path):
    given = crop_module(tmp_path, {**ROI, "localizer_diameter_px": 30})
    assert given.side_px == 60 and given.crop_facts()["diameter_source"].startswith("roi.")
    fixed = crop_module(tmp_path, {**ROI, "side_px": 44, "localizer_diameter_px": 30})
    assert fixed.side_px == 44


def test_centre_only_pool_without_a_diameter_names_the_option(tmp_path):
    root = make_dataset(tmp_path / "centres", n_masked=0, n_centre_only=15, size=64)
    with pytest.raises(DatasetError, match=r"none of the localizer's \d+ training images has a "):
        crop_module(tmp_path, ROI, root=root)
    with pytest.raises(DatasetError, match="set roi.localizer_diameter_px=D"):
        crop_module(tmp_path, ROI, root=root)
    assert crop_module(tmp_path, {**ROI, "localizer_diameter_px": 12}, root=root).side_px == 24


def test_bad_options_are_refused_with_the_key(tmp_path):
    root = make_dataset(tmp_path / "d", n_masked=12, size=96)
    with pytest.raises(DatasetError, match=r"unknown key\(s\) \['bogus'\]"):
        RoiLocalizationDataModule(root=str(root), roi={**ROI, "bogus": 1})
    with pytest.raises(DatasetError, match="select roi=disc"):
        RoiLocalizationDataModule(root=str(root), roi={"localizer_crops": True})
    with pytest.raises(DatasetError, match="roi.localizer_jitter=0.6"):
        RoiLocalizationDataModule(root=str(root), roi={**ROI, "localizer_jitter": 0.6})


# --------------------------------------------------------------------------- windows


def test_training_windows_move_within_the_jitter(module):
    samples = module.samples("train", None, train=True)
    truth = truths(module, "train")
    limit = 0.25 * module.side_px + module.side_px / SIZE  # jitter, plus one crop px of rounding
    shifts = []
    for _ in range(20):
        item = samples[0]
        assert item["image"].shape == (1, SIZE, SIZE)
        side = float(item["box"][2])
        assert side == pytest.approx(module.side_px, abs=1.0)
        np.testing.assert_allclose(item["frame_size"].numpy(), [side, side])
        # The target is the true centre, wherever the window went.
        np.testing.assert_allclose(native_centre(item), truth[0], atol=1e-3)
        window_centre = item["box"][:2].numpy() + (side - 1) / 2
        shift = truth[0] - window_centre
        assert np.abs(shift).max() <= limit
        shifts.append(tuple(np.round(shift, 3)))
    assert len(set(shifts)) > 5  # the window moves


def test_window_without_jitter_is_the_test_crop_at_the_same_centre(module):
    """Issue 16.4: the crop localizer's window, not moved off the true centre, shows the pixels
    of the crop a segmenter is tested on around that centre (the window is preprocessed, not a
    larger crop it is cut from), and every window (train or validation) is the preprocessing of
    its own integer box."""
    by_id = {}
    for _, (dataset, _) in module.sources.items():
        by_id.update(dataset.by_id())
    config = module.preprocess_config
    samples = module.samples("train", None, train=True)
    samples.offset = lambda item, spare: np.array([spare // 2, spare // 2])
    crops, data = module.part_crops("train")[0]
    centres = true_centres(data, crops.ids)
    for item, image_id in enumerate(crops.ids):
        box = box_around(centres[image_id], module.side_px)
        expected = crop_input(read_image(by_id[image_id].image_path), box, config)
        got = np.rint(samples[item]["image"][0].numpy() * 255.0)
        np.testing.assert_array_equal(got, expected, err_msg=image_id)
    for part, train in (("train", True), ("val", False)):
        drawn = module.samples(part, None, train=train)
        for item, image_id in enumerate(module.part_crops(part)[0][0].ids):
            sample = drawn[item]
            box = Box(*(int(v) for v in sample["box"].tolist()))
            assert box.as_list() == sample["box"].tolist() and box.side == module.side_px
            expected = crop_input(read_image(by_id[image_id].image_path), box, config)
            got = np.rint(sample["image"][0].numpy() * 255.0)
            np.testing.assert_array_equal(got, expected, err_msg=image_id)


def test_validation_windows_are_fixed_and_spread(module):
    first = list(module.val_dataloader())
    again = list(module.val_dataloader())
    for a, b in zip(first, again, strict=True):
        torch.testing.assert_close(a["center"], b["center"])
        torch.testing.assert_close(a["image"], b["image"])
    centres = torch.cat([batch["center"] for batch in first])
    assert len({tuple(c) for c in centres.numpy().round(4)}) == len(centres) > 1
    assert (centres - 0.5).abs().max() <= 0.25 + 1.0 / SIZE  # within the jitter


def test_target_round_trip_is_in_native_px_of_the_window(module):
    batch = next(iter(module.val_dataloader()))
    args = (batch["native_size"], batch["radius"], torch.tensor([[0.5, 0.5]]))
    exact = localization_errors(batch["center"], batch["center"], *args, batch["frame_size"])
    assert exact["dist_px"].abs().max() == 0
    one_px = batch["center"] + torch.tensor([1.0 / SIZE, 0.0])
    off = localization_errors(one_px, batch["center"], *args, batch["frame_size"])
    torch.testing.assert_close(off["dist_px"], batch["frame_size"][:, 0] / SIZE)
    # The image-centre baseline is the window's centre.
    centre = (batch["center"] - 0.5).mul(batch["frame_size"]).norm(dim=1)
    torch.testing.assert_close(off["image_centre_dist_px"], centre)


def test_constant_baseline_is_the_mean_training_centre_in_the_window(module):
    samples = module.samples("train", None, train=True)
    draws = [samples[i]["center"].numpy() for _ in range(40) for i in range(len(samples))]
    expected = np.mean(draws, axis=0)
    np.testing.assert_allclose(module.mean_train_center(), expected, atol=0.02)


def test_no_test_set_to_search(module):
    with pytest.raises(DatasetError, match="crop-scale localizer"):
        module.test_dataloader()
    assert "n_test" not in module.counts()


# --------------------------------------------------------------------------- the segmenter


def test_segmentation_module_ignores_the_localizer_keys_and_refuses_unknown_ones(tmp_path):
    root = make_dataset(tmp_path / "d", n_masked=12, size=96)
    common = {"root": str(root), "image_size": SIZE, "num_folds": 3}
    plain = RoiSegmentationDataModule(**common, roi={"side_diameters": 2.0})
    keys = {"localizer_crops": True, "localizer_jitter": 0.25, "localizer_diameter_px": None}
    with_keys = RoiSegmentationDataModule(**common, roi={"side_diameters": 2.0, **keys})
    assert with_keys.spec == plain.spec  # so its facts and identity are those without them
    with pytest.raises(DatasetError, match="unexpected keyword argument 'bogus'"):
        RoiSegmentationDataModule(**common, roi={"side_diameters": 2.0, "bogus": 1})
