"""``locseg.predict`` on briefly trained checkpoints: native sizes, CSV, overlays, bad input."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import draw_disc_image, make_dataset
from test_inference import train_roi_segmenter
from test_train import compose_job

from locseg.data.dataset import load_dataset, read_image, write_image
from locseg.data.preprocess import PreprocessConfig, preprocess_dataset, preprocess_image
from locseg.inference.batches import load_input
from locseg.inference.native import native_mask
from locseg.models.encoder_io import EncoderCheckpointError
from locseg.models.localizer import LocalizerModule
from locseg.models.segmenter import SegmenterModule
from locseg.predict import PredictError, main, parse_args, predict
from locseg.roi.geometry import box_around, crop_input, paste_back
from locseg.train import run_job

NATIVE = {"seg_000.png": (48, 48), "loc_000.png": (48, 48), "wide.png": (60, 40)}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """A localizer, then a segmenter fine-tuned from its encoder; encoder.pt is then deleted."""
    tmp = tmp_path_factory.mktemp("trained")
    root = make_dataset(tmp / "data", n_masked=12, n_centre_only=8)
    common = [
        f"data.cache_dir={tmp / 'cache'}",
        "callbacks.overlays=null",
        "steps.localize=16",
        "steps.segment=8",
        "val_every=4",
    ]
    run_job(compose_job("localize", tmp / "L", root, *common, "model.lr=3e-3"))
    run_job(
        compose_job(
            "segment",
            tmp / "S",
            root,
            *common,
            "model.lr=1e-2",
            "model.init=localizer",
            "model.freeze_encoder=false",
            f"model.encoder_ckpt={tmp / 'L' / 'encoder.pt'}",
        )
    )
    (tmp / "L" / "encoder.pt").unlink()  # prediction must not need it any more
    return {
        "data": root,
        "cache": tmp / "cache",
        "loc": tmp / "L" / "checkpoints" / "last.ckpt",
        "seg": tmp / "S" / "checkpoints" / "last.ckpt",
    }


@pytest.fixture(scope="module")
def photos(trained, tmp_path_factory) -> Path:
    """Two training photos (48x48), a new 60x40 one, a corrupt x.png and a non-image file."""
    folder = tmp_path_factory.mktemp("photos")
    for name in ("seg_000.png", "loc_000.png"):
        shutil.copy(trained["data"] / "images" / name, folder / name)
    image, _, _ = draw_disc_image(np.random.default_rng(7), 48)
    write_image(folder / "wide.png", cv2.resize(image, (60, 40), interpolation=cv2.INTER_AREA))
    (folder / "x.png").write_bytes(np.random.default_rng(0).bytes(200))
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.fixture(scope="module")
def predicted(trained, photos, tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("out")
    summary = predict([trained["loc"], trained["seg"]], photos, out, batch_size=2, device="cpu")
    return summary, out


def read_rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as handle:
        return {row["image"]: row for row in csv.DictReader(handle)}


def test_masks_have_each_native_size_and_match_the_csv(predicted):
    summary, out = predicted
    assert summary["processed"] == 3
    rows = read_rows(out / "centers.csv")
    assert set(rows) == set(NATIVE)
    for name, (width, height) in NATIVE.items():
        mask = read_image(out / "masks" / f"{Path(name).stem}.png")
        assert mask.shape == (height, width)
        assert set(np.unique(mask)) <= {0, 255}
        row = rows[name]
        assert (int(row["width"]), int(row["height"])) == (width, height)
        assert int(row["mask_area_px"]) == int((mask == 255).sum())
        if (mask == 255).any():
            ys, xs = np.nonzero(mask)
            assert float(row["mask_x"]) == pytest.approx(xs.mean(), abs=0.01)
            assert float(row["mask_y"]) == pytest.approx(ys.mean(), abs=0.01)
        else:
            assert row["mask_x"] == row["mask_y"] == ""


def test_overlays_are_the_photograph_at_native_size(predicted, photos):
    _, out = predicted
    for name, (width, height) in NATIVE.items():
        overlay = read_image(out / "overlays" / f"{Path(name).stem}.png")
        assert overlay.shape == (height, width, 3)
        changed = (overlay != read_image(photos / name)).any(axis=2)
        assert 0 < changed.sum() < 0.5 * width * height  # markers drawn, photograph kept


def test_localizer_centre_is_the_model_output_in_native_pixels(predicted, trained, photos):
    _, out = predicted
    rows = read_rows(out / "centers.csv")
    model = LocalizerModule.load_from_checkpoint(trained["loc"], map_location="cpu").eval()
    config = PreprocessConfig(**model.hparams.preprocess)
    for name, (width, height) in NATIVE.items():
        pixels = preprocess_image(read_image(photos / name), config)
        with torch.inference_mode():
            u, v = model(torch.from_numpy(pixels)[None, None].float() / 255)[0].tolist()
        x, y = float(rows[name]["loc_x"]), float(rows[name]["loc_y"])
        assert (x, y) == pytest.approx((u * width - 0.5, v * height - 0.5), abs=0.01)
        assert -0.25 * width < x < 1.25 * width and -0.25 * height < y < 1.25 * height


def test_network_input_is_the_training_cache_row(trained, photos):
    """Preprocessing at prediction time is bit-identical to what the model was trained on."""
    hparams = torch.load(trained["seg"], weights_only=True)["hyper_parameters"]
    config = PreprocessConfig(**hparams["preprocess"])
    cache = preprocess_dataset(load_dataset(trained["data"]), config, trained["cache"])
    for image_id in ("seg_000", "loc_000"):
        loaded = load_input(photos / f"{image_id}.png", {config}).inputs[config]
        np.testing.assert_array_equal(loaded, cache.images[cache.ids.index(image_id)])


def test_unreadable_file_is_skipped_and_named(predicted):
    summary, out = predicted
    assert list(summary["skipped"]) == ["x.png"]
    assert "cannot decode" in summary["skipped"]["x.png"]
    assert not (out / "masks" / "x.png").exists() and not (out / "overlays" / "x.png").exists()


def test_segmenter_does_not_need_the_deleted_encoder(trained):
    """Guards the test above: a plain load would look for the (deleted) encoder.pt."""
    with pytest.raises(EncoderCheckpointError, match="encoder.pt"):
        SegmenterModule.load_from_checkpoint(trained["seg"], weights_only=True)


def test_single_file_segmenter_only_full_mask_at_threshold_zero(trained, photos, tmp_path):
    """Every probability exceeds 0: the whole native frame is disc, centred on the image."""
    summary = predict(trained["seg"], photos / "wide.png", tmp_path, device="cpu", threshold=0.0)
    assert summary["processed"] == 1 and summary["skipped"] == {}
    (row,) = read_rows(tmp_path / "centers.csv").values()
    assert row["loc_x"] == row["loc_y"] == ""
    assert int(row["mask_area_px"]) == 60 * 40
    assert (float(row["mask_x"]), float(row["mask_y"])) == (29.5, 19.5)


def test_native_mask_maps_a_disc_back_to_native_pixels():
    yy, xx = np.mgrid[:32, :32]
    prob = ((xx - 7.5) ** 2 + (yy - 23.5) ** 2 <= 36).astype(np.float32)  # (u, v) = (0.25, 0.75)
    mask = native_mask(prob, (120, 80), 0.5)
    ys, xs = np.nonzero(mask)
    assert mask.shape == (80, 120)
    assert (xs.mean(), ys.mean()) == pytest.approx((0.25 * 120 - 0.5, 0.75 * 80 - 0.5), abs=0.3)


def test_bad_key_lists_the_valid_ones(capsys):
    with pytest.raises(PredictError, match="'inptu'.*valid keys are: ckpt, input, output"):
        parse_args(["ckpt=a.ckpt", "inptu=photos", "output=out"])
    assert main(["ckpt=a.ckpt", "inptu=photos", "output=out"]) == 1
    assert "batch_size" in capsys.readouterr().out


def test_missing_or_garbage_checkpoint_is_named(photos, tmp_path):
    missing = tmp_path / "nope.ckpt"
    with pytest.raises(PredictError, match=f"{missing}: checkpoint not found"):
        predict(missing, photos, tmp_path / "out")
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(PredictError, match=f"{garbage}: cannot read"):
        predict(garbage, photos, tmp_path / "out")


def test_nothing_readable_exits_one(trained, photos, tmp_path):
    argv = [f"ckpt={trained['loc']}", f"input={photos / 'x.png'}", f"output={tmp_path}"]
    assert main(argv) == 1
    assert not (tmp_path / "centers.csv").exists()


def test_command_line_as_documented(trained, photos, tmp_path):
    """`python -m locseg.predict ckpt=[LOC,SEG] input=DIR output=DIR` exits 0 and writes outputs."""
    out = tmp_path / "cli"
    argv = [
        f"ckpt=[{trained['loc']},{trained['seg']}]",
        f"input={photos}",
        f"output={out}",
        "device=cpu",
    ]
    assert main(argv) == 0
    assert (out / "centers.csv").is_file() and any((out / "masks").iterdir())


# --------------------------------------------------------------------------- disc-centred crops


@pytest.fixture(scope="module")
def roi_predicted(trained, photos, tmp_path_factory) -> tuple[dict, Path, Path]:
    """A segmenter trained on 32-px crops, run with the localizer that places them."""
    tmp = tmp_path_factory.mktemp("roi")
    ckpt = tmp / "roi.ckpt"
    train_roi_segmenter(trained["data"], trained["cache"], ckpt, steps=20, num_folds=3)
    summary = predict([trained["loc"], ckpt], photos, tmp / "out", batch_size=2, device="cpu")
    return summary, tmp / "out", ckpt


def test_roi_masks_are_the_crop_around_the_localizer_centre_pasted_back(
    roi_predicted, trained, photos
):
    summary, out, ckpt = roi_predicted
    assert summary["processed"] == 3
    rows = read_rows(out / "centers.csv")
    localizer = LocalizerModule.load_from_checkpoint(trained["loc"], map_location="cpu").eval()
    segmenter = SegmenterModule.load_from_checkpoint(
        ckpt, map_location="cpu", weights_only=True, init="scratch", encoder_ckpt=None
    ).eval()
    side = torch.load(ckpt, weights_only=True)["RoiSegmentationDataModule"]["locseg_roi"]["side_px"]
    loc_config = PreprocessConfig(**localizer.hparams.preprocess)
    seg_config = PreprocessConfig(**segmenter.hparams.preprocess)
    for name, (width, height) in NATIVE.items():
        photo = read_image(photos / name)
        pixels = torch.from_numpy(preprocess_image(photo, loc_config))[None, None].float() / 255
        with torch.inference_mode():
            u, v = localizer(pixels)[0].tolist()
        box = box_around((u * width - 0.5, v * height - 0.5), side)
        row = rows[name]
        assert [int(row[f"roi_{k}"]) for k in ("x0", "y0", "side")] == box.as_list()
        crop_pixels = torch.from_numpy(crop_input(photo, box, seg_config))[None, None].float()
        with torch.inference_mode():
            prob = segmenter(crop_pixels / 255)[0, 0].numpy()
        expected = paste_back(prob, box, (width, height)) > 0.5
        mask = read_image(out / "masks" / f"{Path(name).stem}.png") == 255
        assert mask.shape == (height, width)
        np.testing.assert_array_equal(mask, expected)
        outside = np.ones_like(mask)
        outside[max(box.y0, 0) : box.y0 + side, max(box.x0, 0) : box.x0 + side] = False
        assert not mask[outside].any()  # nothing pasted outside the crop


def test_roi_segmenter_alone_is_refused_naming_the_fix(roi_predicted, photos, tmp_path):
    _, _, ckpt = roi_predicted
    with pytest.raises(PredictError, match=r"disc-centred crops .* pass ckpt=\[LOCALIZER"):
        predict(ckpt, photos, tmp_path)


def _predict_wide(trained, photos, out: Path, **switches: bool) -> np.ndarray:
    """The mask ``predict``'s command line writes for wide.png (60 x 40) with these switches."""
    options = [f"{name}={'true' if on else 'false'}" for name, on in switches.items()]
    argv = [f"ckpt={trained['seg']}", f"input={photos / 'wide.png'}", f"output={out}"]
    assert main([*argv, "device=cpu", *options]) == 0
    return read_image(out / "masks" / "wide.png") > 0


def test_postprocessing_switches_apply_to_the_written_masks(trained, photos, tmp_path, monkeypatch):
    """Each switch changes the written mask as it should: on a prediction built with a speck and
    a hole, ``largest`` drops the speck, ``fill`` fills the hole (scipy applied directly), and
    ``tta`` averages the probabilities with the mirrored image's."""
    from scipy import ndimage

    from locseg.inference.batches import segment
    from locseg.inference.checkpoints import load_model
    from locseg.inference.postprocess import PostProcess

    # tta with the trained network: the flip-averaged probabilities, thresholded at native size.
    written = _predict_wide(trained, photos, tmp_path / "tta", tta=True)
    model = load_model(trained["seg"], torch.device("cpu"))
    pixels = preprocess_image(read_image(photos / "wide.png"), model.preprocess)
    plain = model.module(torch.from_numpy(pixels)[None, None].float() / 255)[0, 0]
    mirrored = model.module(torch.from_numpy(pixels[:, ::-1].copy())[None, None].float() / 255)
    prob = ((plain + mirrored[0, 0].flip(-1)) / 2).detach().numpy()
    np.testing.assert_allclose(
        prob, segment(model.module, pixels[None], torch.device("cpu"), tta=True)[0], atol=1e-6
    )
    native = cv2.resize(prob, (60, 40), interpolation=cv2.INTER_LINEAR) > 0.5
    np.testing.assert_array_equal(written, native)
    assert PostProcess.from_options({"tta": True}).tta

    # A designed network output (32 x 32): a square with a 4 x 4 hole, and a 2 x 2 speck in the
    # top-right corner; it does not depend on the input, so flip TTA sees it mirrored.
    side = pixels.shape[-1]
    designed = np.zeros((side, side), np.float32)
    designed[8:24, 8:24] = 1.0
    designed[14:18, 14:18] = 0.0
    designed[1:3, side - 5 : side - 3] = 1.0

    def designed_forward(self, image):
        return torch.from_numpy(designed).expand(image.shape[0], 1, side, side).clone()

    monkeypatch.setattr(SegmenterModule, "forward", designed_forward)
    raw = cv2.resize(designed, (60, 40), interpolation=cv2.INTER_LINEAR) > 0.5
    eight = np.ones((3, 3), bool)
    labels, count = ndimage.label(raw, structure=eight)
    assert count == 2, "the square and the speck"
    largest = labels == 1 + np.argmax(np.bincount(labels.ravel())[1:])
    filled = ndimage.binary_fill_holes(raw)
    assert (filled & ~raw).sum() >= 16, "the hole"
    expected = {
        (False, False): raw,
        (True, False): largest,
        (False, True): filled,
        (True, True): ndimage.binary_fill_holes(largest),
    }
    for (keep_largest, fill), mask in expected.items():
        out = tmp_path / f"largest{keep_largest}_fill{fill}"
        written = _predict_wide(trained, photos, out, largest=keep_largest, fill=fill)
        np.testing.assert_array_equal(written, mask, err_msg=f"largest={keep_largest} fill={fill}")
    assert not np.array_equal(largest, raw) and not np.array_equal(filled, raw)
    assert ndimage.label(expected[True, True], structure=eight)[1] == 1
    assert not (ndimage.binary_fill_holes(expected[True, True]) ^ expected[True, True]).any()

    # tta on the designed output: the speck, in one corner only, averages to 0.5 and is gone.
    averaged = (designed + designed[:, ::-1]) / 2
    mirrored_mask = cv2.resize(averaged, (60, 40), interpolation=cv2.INTER_LINEAR) > 0.5
    assert not np.array_equal(mirrored_mask, raw)
    np.testing.assert_array_equal(
        _predict_wide(trained, photos, tmp_path / "t", tta=True), mirrored_mask
    )
