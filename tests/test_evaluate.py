"""``locseg.evaluate`` on briefly trained checkpoints: training's numbers again, native metrics."""

from __future__ import annotations

import csv
import json
import math
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import draw_disc_image, make_dataset, write_labelled
from test_inference import train_roi_segmenter
from test_train import compose_job

from locseg.data.dataset import DatasetError, read_image, read_mask
from locseg.data.preprocess import PreprocessConfig, preprocess_image
from locseg.evaluate import evaluate, main
from locseg.inference.options import InferenceError
from locseg.models.segmenter import SegmenterModule
from locseg.roi.centres import roi_localizer_path, roi_test_centres
from locseg.roi.geometry import RoiError
from locseg.train import run_job

WIDTH, HEIGHT = 64, 44


def make_wide_dataset(root: Path, n_masked: int = 12, n_centre_only: int = 8) -> Path:
    """64 x 44 photographs (not square, so the native mapping matters) with one disc each."""
    rng = np.random.default_rng(5)

    def draw():
        image, mask, _ = draw_disc_image(rng, WIDTH)
        return image[10 : 10 + HEIGHT], mask[10 : 10 + HEIGHT]

    return write_labelled(root, (draw() for _ in range(n_masked + n_centre_only)), n_masked)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A localizer and a scratch segmenter, trained a few steps on fold 0 of 3."""
    tmp = tmp_path_factory.mktemp("runs")
    root = make_wide_dataset(tmp / "data")
    common = [f"data.cache_dir={tmp / 'cache'}", "callbacks.overlays=null", "val_every=4"]
    run_job(compose_job("localize", tmp / "L", root, *common, "steps.localize=12"))
    run_job(compose_job("segment", tmp / "S", root, *common, "steps.segment=8", "model.lr=1e-2"))
    return {"data": root, "cache": tmp / "cache", "L": tmp / "L", "S": tmp / "S"}


def best(run_dir: Path) -> tuple[Path, dict]:
    """The checkpoint training tested, and what training wrote about it."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return Path(metrics["best_checkpoint"]), metrics


def read_csv(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as handle:
        return {row["image"]: row for row in csv.DictReader(handle)}


def csv_mean(rows: dict[str, dict[str, str]], column: str) -> float:
    values = [float(row[column]) for row in rows.values() if row[column] != ""]
    return float(np.mean(values))


@pytest.fixture(scope="module")
def segmenter_eval(runs, tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("seg_eval")
    ckpt, _ = best(runs["S"])
    return evaluate(ckpt, runs["data"], out, cache_dir=runs["cache"], device="cpu"), out


def test_segmenter_input_size_dice_is_trainings_test_dice(segmenter_eval, runs):
    result, out = segmenter_eval
    _, trained = best(runs["S"])
    assert result["role"] == "segmenter" and result["fold"] == 0
    assert result["split_options"]["num_folds"] == 3  # from the run's config, not the default 5
    assert result["n_images"] == trained["n_test"]
    assert result["metrics"]["dice"] == pytest.approx(trained["test"]["dice"], abs=1e-5)
    assert result["metrics"]["iou"] == pytest.approx(trained["test"]["iou"], abs=1e-5)
    rows = read_csv(out / "per_image.csv")
    assert set(rows) == set(trained["per_image_test_dice"])
    for image_id, dice in trained["per_image_test_dice"].items():
        assert float(rows[image_id]["dice"]) == pytest.approx(dice, abs=1e-5)
    assert result["warnings"] == []


def test_segmenter_metrics_json_is_the_csv_mean(segmenter_eval):
    result, out = segmenter_eval
    stored = json.loads((out / "metrics.json").read_text())
    assert stored["metrics"] == result["metrics"]
    rows = read_csv(out / "per_image.csv")
    for column in ("dice", "iou", "dice_native", "iou_native", "hd95_native_px"):
        if stored["metrics"][column] is None:  # no finite HD95 at all
            assert all(row[column] == "" for row in rows.values())
            continue
        assert stored["metrics"][column] == pytest.approx(csv_mean(rows, column), abs=1e-5)
    empty = sum(row["hd95_native_px"] == "" for row in rows.values())
    assert stored["metrics"]["hd95_undefined"] == empty
    assert {(int(r["width"]), int(r["height"])) for r in rows.values()} == {(WIDTH, HEIGHT)}


def test_segmenter_native_dice_is_a_direct_computation(segmenter_eval, runs):
    """File -> preprocessing -> network -> bilinear to 64 x 44 -> > 0.5 -> against the mask file."""
    result, out = segmenter_eval
    ckpt, _ = best(runs["S"])
    model = SegmenterModule.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True)
    model.eval()
    config = PreprocessConfig(**model.hparams.preprocess)
    rows = read_csv(out / "per_image.csv")
    for image_id, row in rows.items():
        photo = read_image(runs["data"] / "images" / f"{image_id}.png")
        pixels = torch.from_numpy(preprocess_image(photo, config))[None, None].float() / 255
        with torch.no_grad():
            prob = model(pixels)[0, 0].numpy()
        pred = cv2.resize(prob, (WIDTH, HEIGHT), interpolation=cv2.INTER_LINEAR) > 0.5
        truth = read_mask(runs["data"] / "masks" / f"{image_id}.png")
        total = int(pred.sum() + truth.sum())
        expected = 2 * int((pred & truth).sum()) / total
        assert float(row["dice_native"]) == pytest.approx(expected, abs=1e-5)


def test_localizer_reproduces_trainings_errors_and_baselines(runs, tmp_path):
    ckpt, trained = best(runs["L"])
    result = evaluate(ckpt, runs["data"], tmp_path, cache_dir=runs["cache"], device="cpu")
    assert result["role"] == "localizer" and result["n_images"] == trained["n_test"]
    for name in ("dist_px", "dist_frac_width", "baseline_dist_px", "image_centre_dist_px"):
        assert result["metrics"][name] == pytest.approx(trained["test"][name], rel=1e-5), name
    rows = read_csv(tmp_path / "per_image.csv")
    for name in ("dist_px", "dist_frac_width", "image_centre_dist_px", "within_radius"):
        assert result["metrics"][name] == pytest.approx(csv_mean(rows, name), abs=1e-5), name
    for row in rows.values():  # the distance is the one between the two points in the row
        dx = float(row["pred_x"]) - float(row["true_x"])
        dy = float(row["pred_y"]) - float(row["true_y"])
        assert float(row["dist_px"]) == pytest.approx(math.hypot(dx, dy), abs=1e-3)
        assert float(row["dist_frac_width"]) == pytest.approx(float(row["dist_px"]) / WIDTH)


def test_split_all_scores_every_masked_image_and_warns(runs, tmp_path):
    ckpt, _ = best(runs["S"])
    result = evaluate(ckpt, runs["data"], tmp_path, split="all", cache_dir=runs["cache"])
    assert result["n_images"] == 12 and result["fold"] is None
    assert "includes its training images" in result["warnings"][0]
    assert len(read_csv(tmp_path / "per_image.csv")) == 12


def test_another_fold_of_the_training_set_is_flagged(runs, tmp_path):
    ckpt, _ = best(runs["S"])
    result = evaluate(ckpt, runs["data"], tmp_path, fold=1, cache_dir=runs["cache"])
    assert result["fold"] == 1
    assert "trained for fold 0" in result["warnings"][0]
    # A localizer of a set with a centre-only pool never trained on masked images: no warning.
    localizer, _ = best(runs["L"])
    result = evaluate(localizer, runs["data"], tmp_path, fold=1, cache_dir=runs["cache"])
    assert result["fold"] == 1 and result["warnings"] == []


def copy_run(run_dir: Path, to: Path, *files: str) -> Path:
    """The run's best checkpoint in a new run folder with only ``files`` of the run beside it."""
    ckpt, _ = best(run_dir)
    (to / "checkpoints").mkdir(parents=True)
    shutil.copy(ckpt, to / "checkpoints" / "best.ckpt")
    for name in files:
        shutil.copy(run_dir / name, to / name)
    return to / "checkpoints" / "best.ckpt"


def test_unknown_training_fold_is_refused_not_guessed(runs, tmp_path):
    """No config_resolved.yaml beside the checkpoint: fold 0 could be its training images."""
    ckpt = copy_run(runs["S"], tmp_path / "bare")
    common = {"num_folds": 3, "cache_dir": runs["cache"], "device": "cpu"}
    with pytest.raises(InferenceError) as refused:
        evaluate(ckpt, runs["data"], tmp_path / "out", **common)
    message = str(refused.value)
    assert str(ckpt) in message and "config_resolved.yaml" in message
    assert "data.fold=K" in message and "data.split=all" in message
    assert not (tmp_path / "out" / "metrics.json").exists()
    # Given a fold, it is scored and says where the fold came from.
    result = evaluate(ckpt, runs["data"], tmp_path / "out", fold=0, **common)
    assert result["fold"] == 0 and result["fold_from"] == "data.fold"
    assert evaluate(ckpt, runs["data"], tmp_path / "all", split="all", **common)["n_images"] == 12


def test_localizer_without_run_config_takes_the_fold_its_encoder_names(runs, tmp_path):
    """encoder.pt records the images a localizer never saw: that fixes the fold, no guess."""
    ckpt = copy_run(runs["L"], tmp_path / "bare", "encoder.pt")
    result = evaluate(ckpt, runs["data"], tmp_path / "out", num_folds=3, cache_dir=runs["cache"])
    assert result["fold_from"] == str(tmp_path / "bare" / "encoder.pt")
    assert result["warnings"] == []


@pytest.fixture(scope="module")
def pool_runs(tmp_path_factory) -> dict[str, Path]:
    """``make idrid`` in small: masked images only, one localizer trained on a centre-only pool
    folder serving every fold; and a per-fold localizer of fold 0 (no pool)."""
    tmp = tmp_path_factory.mktemp("pool_runs")
    root = make_wide_dataset(tmp / "masked", n_masked=12, n_centre_only=0)
    pool = make_dataset(tmp / "pool", n_masked=0, n_centre_only=12, size=WIDTH, seed=3)
    common = [f"data.cache_dir={tmp / 'cache'}", "callbacks.overlays=null", "steps.localize=4"]
    run_job(compose_job("localize", tmp / "P", root, *common, f"data.pool=[{pool}]"))
    run_job(compose_job("localize", tmp / "F", root, *common))
    return {"data": root, "pool": pool, "cache": tmp / "cache", "P": tmp / "P", "F": tmp / "F"}


def test_shared_pool_localizer_is_not_flagged_on_any_fold(pool_runs, tmp_path):
    ckpt, trained = best(pool_runs["P"])
    assert not trained["per_fold"]
    common = {"cache_dir": pool_runs["cache"], "device": "cpu"}
    for fold in (0, 1, 2):
        result = evaluate(ckpt, pool_runs["data"], tmp_path / f"{fold}", fold=fold, **common)
        assert result["fold"] == fold and result["warnings"] == [], fold
    result = evaluate(ckpt, pool_runs["data"], tmp_path / "all", split="all", **common)
    assert result["warnings"] == []  # it never trained on this folder at all
    # Its pool folder is what it trained on: said so.
    result = evaluate(ckpt, pool_runs["pool"], tmp_path / "pool", split="all", **common)
    assert "training pool folders" in result["warnings"][0]
    # Without its run config: encoder.pt says it excludes every image of these folds.
    bare = copy_run(pool_runs["P"], tmp_path / "bare", "encoder.pt")
    result = evaluate(bare, pool_runs["data"], tmp_path / "bare_out", num_folds=3, **common)
    assert result["warnings"] == [] and result["fold_from"].endswith("encoder.pt")


def test_per_fold_localizer_on_another_fold_is_flagged(pool_runs, tmp_path):
    ckpt, trained = best(pool_runs["F"])
    assert trained["per_fold"]
    common = {"cache_dir": pool_runs["cache"], "device": "cpu"}
    assert evaluate(ckpt, pool_runs["data"], tmp_path / "0", **common)["warnings"] == []
    result = evaluate(ckpt, pool_runs["data"], tmp_path / "1", fold=1, **common)
    assert "trained for fold 0" in result["warnings"][0]
    assert "test images of fold 1 were among its training" in result["warnings"][0]
    # The same from encoder.pt alone (no run config): its excluded ids are fold 0's test set.
    bare = copy_run(pool_runs["F"], tmp_path / "bare", "encoder.pt")
    result = evaluate(bare, pool_runs["data"], tmp_path / "b1", fold=1, num_folds=3, **common)
    assert "trained for fold 0" in result["warnings"][0]
    result = evaluate(bare, pool_runs["data"], tmp_path / "b", num_folds=3, **common)
    assert result["fold"] == 0 and result["warnings"] == []


def test_bad_inputs_name_the_file_or_value(runs, tmp_path):
    ckpt, _ = best(runs["S"])
    encoder = runs["L"] / "encoder.pt"
    with pytest.raises(InferenceError, match=f"{encoder}: not a locseg Lightning checkpoint"):
        evaluate(encoder, runs["data"], tmp_path)
    with pytest.raises(DatasetError, match="dataset folder not found"):
        evaluate(ckpt, tmp_path / "nowhere", tmp_path)
    with pytest.raises(DatasetError, match=r"data.fold=3 is out of range; use 0..2"):
        evaluate(ckpt, runs["data"], tmp_path, fold=3, cache_dir=runs["cache"])
    with pytest.raises(DatasetError, match="data.split='val' is not one of test, all"):
        evaluate(ckpt, runs["data"], tmp_path, split="val", cache_dir=runs["cache"])
    assert not (tmp_path / "metrics.json").exists()


def run_cli(monkeypatch, *argv: str) -> int:
    """``python -m locseg.evaluate ARGV`` in this process (Hydra reads sys.argv)."""
    monkeypatch.setattr(sys, "argv", ["locseg.evaluate", *argv])
    try:
        main()
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


def test_command_line_as_documented(runs, tmp_path, monkeypatch):
    ckpt, trained = best(runs["S"])
    out = tmp_path / "cli"
    code = run_cli(
        monkeypatch,
        f"ckpt={ckpt}",
        f"data.root={runs['data']}",
        f"output={out}",
        f"data.cache_dir={runs['cache']}",
        "device=cpu",
    )
    assert code == 0
    stored = json.loads((out / "metrics.json").read_text())
    assert stored["metrics"]["dice"] == pytest.approx(trained["test"]["dice"], abs=1e-5)
    assert (out / "per_image.csv").is_file()


def test_missing_checkpoint_exits_one_naming_it(runs, tmp_path, monkeypatch, capsys):
    missing = tmp_path / "nope.ckpt"
    argv = [f"ckpt={missing}", f"data.root={runs['data']}", f"output={tmp_path}"]
    code = run_cli(monkeypatch, *argv)
    assert code == 1
    assert f"{missing}: checkpoint not found" in capsys.readouterr().err
    assert not (tmp_path / "metrics.json").exists()


def test_missing_key_prints_the_usage(runs, tmp_path, monkeypatch, capsys):
    code = run_cli(monkeypatch, f"data.root={runs['data']}", f"output={tmp_path}")
    assert code == 1
    assert "missing ckpt=...; usage: python -m locseg.evaluate ckpt=" in capsys.readouterr().err


# --------------------------------------------------------------------------- disc-centred crops


@pytest.fixture(scope="module")
def roi_eval(runs, tmp_path_factory) -> dict:
    """A segmenter trained on crops of fold 0 of 3, scored around the localizer's centres."""
    tmp = tmp_path_factory.mktemp("roi_eval")
    module, _ = train_roi_segmenter(
        runs["data"], runs["cache"], tmp / "roi.ckpt", steps=20, num_folds=3
    )
    loc, _ = best(runs["L"])
    # A plain Trainer's checkpoint, no run folder: its fold is given (it trained on fold 0).
    common = {"fold": 0, "num_folds": 3, "cache_dir": runs["cache"], "device": "cpu"}
    predicted = evaluate(tmp / "roi.ckpt", runs["data"], tmp / "pred", loc_ckpt=loc, **common)
    oracle = evaluate(tmp / "roi.ckpt", runs["data"], tmp / "true", roi_centres="true", **common)
    evaluate(loc, runs["data"], tmp / "loc", **common)
    return {
        "module": module,
        "ckpt": tmp / "roi.ckpt",
        "predicted": predicted,
        "oracle": oracle,
        "rows": read_csv(tmp / "pred" / "per_image.csv"),
        "oracle_rows": read_csv(tmp / "true" / "per_image.csv"),
        "loc_rows": read_csv(tmp / "loc" / "per_image.csv"),
    }


def test_roi_crops_sit_on_the_localizer_centres(roi_eval):
    result, rows = roi_eval["predicted"], roi_eval["rows"]
    module = roi_eval["module"]
    assert result["n_images"] == len(module.selection["test"]) == len(rows)
    assert result["roi"]["side_px"] == module.side_px and result["roi"]["centres"] == "predicted"
    assert result["warnings"] == []  # the localizer kept fold 0's test images out
    for image_id, row in rows.items():
        # The crop's centre is the localizer's prediction: its error is the localizer's.
        located = float(roi_eval["loc_rows"][image_id]["dist_px"])
        assert float(row["centre_dist_px"]) == pytest.approx(located, abs=1e-3)
    for column in ("dice_native", "centre_dist_px"):
        assert result["metrics"][column] == pytest.approx(csv_mean(rows, column), abs=1e-6)


def test_roi_oracle_centres_are_the_true_ones(roi_eval):
    result, rows = roi_eval["oracle"], roi_eval["oracle_rows"]
    assert result["roi"]["centres"] == "true" and result["roi"]["localizer"] is None
    assert all(float(row["centre_dist_px"]) == 0.0 for row in rows.values())
    assert set(rows) == set(roi_eval["rows"])


def test_roi_segmenter_without_localizer_names_the_fix(roi_eval, runs, tmp_path):
    with pytest.raises(InferenceError, match="trained on disc-centred crops .* loc_ckpt="):
        evaluate(
            roi_eval["ckpt"], runs["data"], tmp_path, fold=0, num_folds=3, cache_dir=runs["cache"]
        )
    with pytest.raises(RoiError, match="roi_centres='guess' is not one of predicted, true"):
        evaluate(roi_eval["ckpt"], runs["data"], tmp_path, roi_centres="guess")
    assert not (tmp_path / "metrics.json").exists()


def test_roi_localizer_is_found_beside_the_encoder_and_gives_the_test_centres(roi_eval, runs):
    """What training does before testing a crop segmenter: find the localizer, run it."""
    path = roi_localizer_path(None, runs["L"] / "encoder.pt", None, 0)
    assert path == runs["L"] / "checkpoints" / "best.ckpt" == best(runs["L"])[0]
    assert roi_localizer_path(path, None, None, 0) == path
    centres = roi_test_centres(roi_eval["module"], path)
    assert set(centres) == set(roi_eval["module"].selection["test"])
    for image_id, (x, y) in centres.items():
        row = roi_eval["loc_rows"][image_id]
        assert (x, y) == pytest.approx((float(row["pred_x"]), float(row["pred_y"])), abs=1e-3)
    with pytest.raises(InferenceError, match="set roi.localizer_ckpt=LOCALIZE_RUN"):
        roi_localizer_path(None, None, None, 0)
    with pytest.raises(InferenceError, match="nope.ckpt: localizer checkpoint not found"):
        roi_localizer_path(runs["L"] / "nope.ckpt", None, None, 0)


def test_segmenter_postprocessing_is_applied_and_recorded(
    segmenter_eval, runs, tmp_path, monkeypatch
):
    """postprocess={largest, fill}: the native Dice of masks cleaned up independently (scipy
    directly) on a prediction built with a false speck and a hole in the disc; training's raw
    native Dice is the all-off evaluation."""
    from scipy import ndimage

    from locseg.data.dataset import load_dataset
    from locseg.data.preprocess import preprocess_dataset

    plain, _ = segmenter_eval
    ckpt, trained = best(runs["S"])
    assert plain["postprocess"] == {"largest": False, "fill": False, "tta": False}
    assert plain["metrics"]["dice_native"] == pytest.approx(trained["test"]["dice_native"])

    # The network's output, per cached input: an 11 x 11 square on the true centre with a 3 x 3
    # hole in its middle (disc pixels: filling it gains), and a 2 x 2 speck in the far corner
    # (background: dropping it gains).
    dataset = load_dataset(runs["data"])
    data = preprocess_dataset(dataset, PreprocessConfig(**plain["preprocess"]), runs["cache"])
    side = data.images.shape[-1]
    designed: dict[bytes, np.ndarray] = {}
    ids = sorted(trained["per_image_test_dice"])
    index = data.index_of()
    for image_id in ids:
        cx, cy = np.rint(data.centers[index[image_id]] * side - 0.5).astype(int)
        prob = np.zeros((side, side), np.float32)
        prob[cy - 5 : cy + 6, cx - 5 : cx + 6] = 1.0
        prob[cy - 1 : cy + 2, cx - 1 : cx + 2] = 0.0
        sy = slice(0, 2) if cy > side // 2 else slice(side - 2, side)
        sx = slice(0, 2) if cx > side // 2 else slice(side - 2, side)
        prob[sy, sx] = 1.0
        designed[data.images[index[image_id]].tobytes()] = prob

    def designed_forward(self, image):
        pixels = np.rint(image[:, 0].numpy() * 255).astype(np.uint8)
        return torch.from_numpy(np.stack([designed[p.tobytes()] for p in pixels]))[:, None]

    monkeypatch.setattr(SegmenterModule, "forward", designed_forward)

    def expected_dice(image_id: str, largest: bool, fill: bool) -> float:
        prob = designed[data.images[index[image_id]].tobytes()]
        mask = cv2.resize(prob, (WIDTH, HEIGHT), interpolation=cv2.INTER_LINEAR) > 0.5
        if largest:
            labels, count = ndimage.label(mask, structure=np.ones((3, 3)))
            assert count == 2, "the speck and the square"
            mask = labels == np.argmax(np.bincount(labels.ravel())[1:]) + 1
        if fill:
            mask = ndimage.binary_fill_holes(mask)
        truth = read_mask(runs["data"] / "masks" / f"{image_id}.png")
        return 2 * int((mask & truth).sum()) / int(mask.sum() + truth.sum())

    scores = {}
    for largest in (False, True):
        for fill in (False, True):
            switches = {"largest": largest, "fill": fill, "tta": False}
            out = tmp_path / f"largest{largest}_fill{fill}"
            result = evaluate(
                ckpt, runs["data"], out, cache_dir=runs["cache"], device="cpu", postprocess=switches
            )
            assert result["postprocess"] == switches
            assert json.loads((out / "metrics.json").read_text())["postprocess"] == switches
            rows = read_csv(out / "per_image.csv")
            assert set(rows) == set(ids)
            for image_id in ids:
                expected = expected_dice(image_id, largest, fill)
                assert float(rows[image_id]["dice_native"]) == pytest.approx(expected, abs=1e-6)
            scores[largest, fill] = {i: float(rows[i]["dice_native"]) for i in ids}
    raw = scores[False, False]
    for switched in [(True, False), (False, True), (True, True)]:
        assert all(scores[switched][i] > raw[i] for i in ids), f"largest, fill = {switched}"
    assert all(scores[True, True][i] > scores[True, False][i] for i in ids)
    assert all(scores[True, True][i] > scores[False, True][i] for i in ids)
    with pytest.raises(ValueError, match="valid keys are tta, largest, fill"):
        evaluate(ckpt, runs["data"], tmp_path / "x", postprocess={"flip": True})
