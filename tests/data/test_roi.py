"""Disc-centred crops: the box math, the crop -> paste_back round trip, the crop DataModule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import make_dataset

from locseg.data.dataset import DatasetError, read_image, read_mask
from locseg.data.preprocess import PreprocessConfig, preprocess_image
from locseg.evaluation.metrics import dice
from locseg.roi.datamodule import (
    CHECKPOINT_ENTRY,
    RoiSegmentationDataModule,
    true_centres,
)
from locseg.roi.geometry import (
    Box,
    RoiError,
    RoiSpec,
    box_around,
    crop,
    crop_input,
    crop_mask,
    cut,
    paste_back,
)


def disc(shape: tuple[int, int], cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def centroid(mask: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(mask)
    return float(xs.mean()), float(ys.mean())


# --------------------------------------------------------------------------- box math


@pytest.mark.parametrize("side", [7, 8, 233, 240])
@pytest.mark.parametrize("center", [(301.3, 190.7), (0.0, 0.0), (639.49, 424.51), (-20.2, 5.5)])
def test_box_is_centred_within_half_a_pixel(center, side):
    box = box_around(center, side)
    assert box.side == side
    assert abs(box.center[0] - center[0]) <= 0.5 and abs(box.center[1] - center[1]) <= 0.5


def test_box_maps_crop_and_native_pixels_exactly():
    box = Box(17, -30, 233)
    points = np.array([[0.0, 0.0], [63.0, 63.0], [31.5, 12.25], [-3.0, 70.0]])
    native = box.to_native(points, 64)
    np.testing.assert_allclose(box.to_crop(native, 64), points, atol=1e-9)
    # Crop pixel 0 is centred half a crop pixel (233 / 128 native px) inside the box's edge.
    np.testing.assert_allclose(native[0], (17 - 0.5 + 233 / 128, -30 - 0.5 + 233 / 128), atol=1e-9)
    # The box's centre is the crop's centre.
    np.testing.assert_allclose(box.to_crop(np.array(box.center), 64), (31.5, 31.5), atol=1e-6)


def test_spec_side_is_diameters_times_median_or_native_px():
    assert RoiSpec(side_diameters=3.0).side_for([80.0, 100.0, 90.0, float("nan")]) == 270
    assert RoiSpec(side_px=200).side_for([]) == 200
    with pytest.raises(RoiError, match="set roi.side_px"):
        RoiSpec().side_for([float("nan")])
    with pytest.raises(RoiError, match=r"roi.jitter=0.7 must lie in \[0, 0.5\)"):
        RoiSpec(jitter=0.7)
    with pytest.raises(RoiError, match="side_px .* or side_diameters"):
        RoiSpec(side_diameters=None)


# --------------------------------------------------------------------------- round trip


@pytest.mark.parametrize(("out_size", "min_dice"), [(32, 0.96), (64, 0.975), (128, 0.985)])
def test_disc_mask_survives_crop_and_paste_back_on_a_wide_photograph(out_size, min_dice):
    """A 640 x 425 photograph, a disc of diameter 78 px, a crop of three diameters.

    The disc is 10.7 crop px wide at 32 px, 21 at 64, 43 at 128: the binary crop's quantisation
    is all that is lost (measured Dice 0.966-0.974, 0.979-0.984, 0.988-0.991 over three centres;
    the whole photograph squeezed to 64 px keeps about 0.96). Centroids move by under 0.3 px.
    """
    truth = disc((425, 640), 301.3, 190.7, 39)
    box = box_around((305.0, 186.0), 234)  # a slightly missed centre: the disc is still inside
    small = crop_mask(truth, box, out_size).astype(np.float32)
    assert small.shape == (out_size, out_size)
    back = paste_back(small, box, (640, 425)) > 0.5
    assert back.shape == (425, 640)
    assert dice(back, truth) > min_dice
    assert centroid(back) == pytest.approx((301.3, 190.7), abs=0.5)


def test_image_crop_shows_the_box_content_at_the_right_place():
    image = np.zeros((425, 640, 3), np.uint8)
    image[disc((425, 640), 500.0, 100.0, 30)] = (255, 200, 100)
    box = box_around((500.0, 100.0), 180)
    small = crop(image, box, 60)
    assert small.shape == (60, 60, 3) and small.dtype == np.uint8
    assert centroid(small[..., 0] > 127) == pytest.approx((29.5, 29.5), abs=0.3)


def test_box_beyond_the_edge_is_black_there_and_pastes_nothing_outside():
    image = np.full((40, 60), 200, np.uint8)
    box = Box(-10, 30, 20)  # 10 columns left of the image, 10 rows below it
    piece = cut(image, box)
    assert piece.shape == (20, 20)
    assert (piece[:10, 10:] == 200).all()  # inside the photograph
    assert (piece[:, :10] == 0).all() and (piece[10:, :] == 0).all()  # padded black
    back = paste_back(np.ones((8, 8), np.float32), box, (60, 40))
    assert back.shape == (40, 60)
    assert back[30:40, 0:10].min() == pytest.approx(1.0) and back.sum() == pytest.approx(100.0)
    # A box wholly off the photograph pastes nothing.
    assert paste_back(np.ones((8, 8), np.float32), Box(100, 100, 20), (60, 40)).sum() == 0


def test_crop_input_is_the_preprocessing_of_the_box_pixels():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (50, 70, 3), dtype=np.uint8)
    config = PreprocessConfig(image_size=32)
    out = crop_input(image, Box(10, 5, 40), config)
    assert out.shape == (32, 32) and out.dtype == np.uint8
    # CLAHE and min-max see the box's own pixels, not the whole photograph's.
    np.testing.assert_array_equal(out, preprocess_image(image[5:45, 10:50], config))


def test_paste_back_refuses_non_square_input():
    with pytest.raises(RoiError, match=r"square \(S, S\) probabilities, got shape \(4, 5\)"):
        paste_back(np.zeros((4, 5)), Box(0, 0, 10), (20, 20))


# --------------------------------------------------------------------------- the DataModule


@pytest.fixture
def roi_module(tmp_path):
    root = make_dataset(tmp_path / "d", n_masked=12, size=96)
    module = RoiSegmentationDataModule(
        root=str(root),
        image_size=32,
        batch_size=4,
        num_folds=3,
        cache_dir=str(tmp_path / "cache"),
        roi={"side_diameters": 3.0, "jitter": 0.125},
    )
    module.prepare_data()
    module.setup("fit")
    return module


def test_crop_side_comes_from_the_training_masks(roi_module):
    radii = roi_module.data.radii[roi_module.rows("train")]
    assert roi_module.side_px == round(3.0 * float(np.median(2 * radii)))
    facts = roi_module.state_dict()[CHECKPOINT_ENTRY]
    assert facts["side_px"] == roi_module.side_px and facts["crop_size"] == 32
    # Results trained on crops made another way (before issue 16.4) are not reused.
    assert roi_module.identity()["crop_pipeline"] == "windows-v1"


def test_validation_crops_are_disc_centred_and_match_the_mask_file(roi_module):
    batch = next(iter(roi_module.val_dataloader()))
    assert batch["image"].shape[1:] == (1, 32, 32) and batch["mask"].shape[1:] == (1, 32, 32)
    torch.testing.assert_close(
        batch["center"], torch.full_like(batch["center"], 0.5), atol=0.02, rtol=0
    )
    for k, row in enumerate(batch["index"].tolist()):
        image_id = roi_module.id_of(row)
        x0, y0, side = batch["box"][k].tolist()
        assert side == roi_module.side_px
        truth = read_mask(roi_module.dataset.by_id()[image_id].mask_path)
        expected = crop_mask(truth, Box(int(x0), int(y0), int(side)), 32)
        np.testing.assert_array_equal(batch["mask"][k, 0].numpy(), expected)


def test_training_windows_jitter_the_centre_within_the_margin(roi_module):
    roi_module.augment_options = {"enabled": False}
    centres = []
    for _ in range(3):
        for batch in roi_module.train_dataloader():
            assert batch["image"].shape[1:] == (1, 32, 32)
            centres.append(batch["center"] * 32 - 0.5)
    offsets = torch.cat(centres) - 15.5
    assert offsets.abs().max() <= 4 + 1.0  # margin round(0.125 * 32) = 4 crop px, plus rounding
    assert offsets.std() > 0.5  # the windows do move


def centred(item: int, spare: int) -> np.ndarray:
    """A window offset with zero jitter: the window centred in its margin."""
    return np.array([spare // 2, spare // 2])


def pixels(sample: dict) -> np.ndarray:
    """A batch item's input back in grey levels."""
    return np.rint(sample["image"][0].numpy() * 255.0).astype(np.int16)


def test_training_crop_without_jitter_is_the_test_crop_at_the_same_centre(roi_module):
    """Issue 16.4: one pipeline for every split. A training window not moved off the true
    centre shows the pixels a test (or evaluate / predict) crop around that centre shows: the
    window itself is preprocessed, not a larger margin crop it is then cut from."""
    samples = roi_module.samples("train", None, train=True)
    samples.offset = centred
    by_id = roi_module.dataset.by_id()
    centres = true_centres(roi_module.data, roi_module.selection["train"])
    for item, row in enumerate(samples.rows):
        image_id = roi_module.id_of(row)
        box = box_around(centres[image_id], roi_module.side_px)
        sample = samples[item]
        photo = read_image(by_id[image_id].image_path)
        test = crop_input(photo, box, roi_module.preprocess_config).astype(np.int16)
        np.testing.assert_array_equal(pixels(sample), test, err_msg=image_id)
        assert sample["box"].tolist() == box.as_list()
        truth = read_mask(by_id[image_id].mask_path)
        np.testing.assert_array_equal(sample["mask"][0].numpy(), crop_mask(truth, box, 32))


def test_every_training_window_is_the_preprocessing_of_its_own_box(roi_module):
    """Wherever the jitter puts the window, its input is ``crop_input`` of the photograph at the
    window's (integer, ``side_px``) box, and the box stays within the jitter."""
    samples = roi_module.samples("train", None, train=True)
    by_id = roi_module.dataset.by_id()
    centres = true_centres(roi_module.data, roi_module.selection["train"])
    limit = math.floor(0.125 * roi_module.side_px) + 0.5
    for item in range(len(samples)):
        sample = samples[item]
        image_id = roi_module.id_of(int(sample["index"]))
        box = Box(*(int(v) for v in sample["box"].tolist()))
        assert box.as_list() == sample["box"].tolist() and box.side == roi_module.side_px
        assert np.abs(np.subtract(box.center, centres[image_id])).max() <= limit
        photo = read_image(by_id[image_id].image_path)
        test = crop_input(photo, box, roi_module.preprocess_config).astype(np.int16)
        np.testing.assert_array_equal(pixels(sample), test, err_msg=image_id)


def test_evaluate_and_predict_crop_what_training_shows_at_the_same_centre(roi_module, tmp_path):
    """``locseg.evaluate`` (build_crops around the centres) and ``locseg.predict`` (crop_input
    around the localizer's centre) feed the segmenter the pixels of the training window there."""
    from locseg.inference.batches import load_input, run_models
    from locseg.inference.checkpoints import Model
    from locseg.roi.centres import roi_crops

    ids = roi_module.selection["train"]
    samples = roi_module.samples("train", None, train=True)
    samples.offset = centred
    windows = samples.crops  # the native boxes training windows are cut from
    config, side = roi_module.preprocess_config, roi_module.side_px
    roi = {"side_px": side, "crop_size": 32}
    segmenter = Model("segmenter", None, config, tmp_path / "seg.ckpt", roi)
    crops, errors = roi_crops(
        segmenter, None, roi_module.dataset, roi_module.data, ids, "true", tmp_path / "c", None, 4
    )
    assert set(errors.values()) == {0.0}
    for item in range(len(ids)):
        np.testing.assert_array_equal(crops.images[item].astype(np.int16), pixels(samples[item]))

    class Recorder(torch.nn.Module):
        """A localizer answering the true centres, or a segmenter keeping its inputs."""

        def __init__(self, answer=None):
            super().__init__()
            self.answer, self.seen = answer, []

        def forward(self, images):
            if self.answer is not None:
                return self.answer
            self.seen.append(images)
            return torch.zeros_like(images)

    by_id = roi_module.dataset.by_id()
    loc_config = PreprocessConfig(image_size=16)
    batch = [load_input(by_id[i].image_path, {loc_config}) for i in ids]
    centres = true_centres(roi_module.data, ids)
    sizes = [item.image.shape[1::-1] for item in batch]
    uv = [(np.asarray(centres[i]) + 0.5) / size for i, size in zip(ids, sizes, strict=True)]
    seg = Recorder()
    models = {
        "localizer": Model("localizer", Recorder(torch.tensor(np.array(uv))), loc_config, tmp_path),
        "segmenter": Model("segmenter", seg, config, tmp_path, roi),
    }
    outputs = run_models(models, batch, torch.device("cpu"))
    seen = np.rint(seg.seen[0][:, 0].numpy() * 255.0).astype(np.int16)
    for item, box_list in enumerate(outputs["box"]):
        outer = windows.box(item)  # the localizer's box is the training window at this offset
        offset = (int(box_list[0]) - outer.x0, int(box_list[1]) - outer.y0)
        image, _, box = windows.window(item, offset)
        assert box.as_list() == [int(v) for v in box_list]
        np.testing.assert_array_equal(seen[item], image.astype(np.int16), err_msg=ids[item])


def test_test_crops_need_centres_and_follow_them(roi_module):
    with pytest.raises(DatasetError, match="no centres were given; call set_test_centres"):
        roi_module.test_dataloader()
    ids = roi_module.selection["test"]
    image = read_image(roi_module.dataset.by_id()[ids[0]].image_path)
    centres = {i: (10.0, 80.0) for i in ids}
    roi_module.set_test_centres(centres)
    crops = roi_module.test_crops()
    box = crops.box(0)
    assert box.center == pytest.approx((10.0, 80.0), abs=0.5)
    expected = crop_input(image, box, roi_module.preprocess_config)
    np.testing.assert_array_equal(crops.images[0], expected)
    errors = roi_module.centre_errors()
    assert set(errors) == set(ids) and min(errors.values()) > 0
    with pytest.raises(DatasetError, match="no test centre given"):
        roi_module.set_test_centres({})


def test_unknown_roi_key_is_named(tmp_path):
    with pytest.raises(DatasetError, match="valid keys are side_diameters"):
        RoiSegmentationDataModule(root=str(tmp_path), roi={"sidepx": 3})


@pytest.mark.parametrize("written", [True, "true", "True"])
def test_oracle_centres_accept_yaml_true(tmp_path, written):
    """``roi.test_centres=true`` reaches the DataModule as a YAML boolean; it means the oracle."""
    module = RoiSegmentationDataModule(root=str(tmp_path), roi={"test_centres": written})
    assert module.centre_source == "true"


def test_crop_fov_cache_gives_the_same_crops_around_the_same_native_centres(tmp_path):
    """roi with data.preprocess.crop_fov: centres come back through each image's FOV square and
    the crop is not cut to a field of view again, so the crops are those of a plain module."""
    from conftest import make_fov_dataset

    root = make_fov_dataset(tmp_path / "fov", n_masked=12)
    modules = {}
    for crop_fov in (False, True):
        module = RoiSegmentationDataModule(
            root=str(root),
            image_size=32,
            num_folds=3,
            cache_dir=str(tmp_path / "cache"),
            preprocess={"crop_fov": crop_fov},
            roi={"side_px": 24, "test_centres": "true"},
        )
        module.prepare_data()
        module.setup("fit")
        modules[crop_fov] = module
    plain, framed = modules[False], modules[True]
    assert not framed.data.frame(0).is_identity((64, 48)), "a real field-of-view square"
    ids = framed.selection["val"]
    by_id = framed.dataset.by_id()
    for image_id, xy in true_centres(framed.data, ids).items():
        assert xy == pytest.approx(by_id[image_id].center, abs=1e-3)
    for part in ("val_crops", "test_crops"):
        a, b = getattr(plain, part)(), getattr(framed, part)()
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_array_equal(a.masks, b.masks)
    box = framed.test_crops().box(0)
    image = read_image(by_id[framed.test_crops().ids[0]].image_path)
    expected = crop_input(image, box, PreprocessConfig(image_size=32))
    np.testing.assert_array_equal(framed.test_crops().images[0], expected)
