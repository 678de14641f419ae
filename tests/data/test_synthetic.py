"""The procedural fundus generator: exact labels, determinism, hard images, the on-disk set."""

from __future__ import annotations

import argparse
import json

import cv2
import numpy as np
import pytest

from locseg.data.dataset import (
    DatasetError,
    check_dataset,
    equivalent_radius,
    load_dataset,
    load_sample,
    mask_centroid,
)
from locseg.data.synthetic import PARAMS_FILE, add_arguments, draw_fundus, generate_dataset, prepare


def draws(size: int, n: int, seed: int = 0):
    return [draw_fundus(np.random.default_rng([seed, i]), size) for i in range(n)]


def test_draw_returns_rgb_image_bool_mask_and_centre_inside():
    image, mask, (x, y) = draw_fundus(np.random.default_rng(0), 48)
    assert image.shape == (48, 48, 3) and image.dtype == np.uint8
    assert mask.shape == (48, 48) and mask.dtype == bool and mask.any()
    assert 0 <= x < 48 and 0 <= y < 48 and mask[round(y), round(x)]
    assert image[0, 0].max() == 0 and image[-1, -1].max() == 0  # black outside the field of view
    assert image[24, 24, 0] > image[24, 24, 2]  # orange-red, not grey


def test_same_seed_gives_identical_arrays_and_another_seed_differs():
    first = draw_fundus(np.random.default_rng([3, 1]), 40)
    again = draw_fundus(np.random.default_rng([3, 1]), 40)
    other = draw_fundus(np.random.default_rng([4, 1]), 40)
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert first[2] == again[2]
    assert not np.array_equal(first[0], other[0]) and first[2] != other[2]


@pytest.mark.parametrize("size", [32, 64])
def test_mask_centroid_is_within_one_pixel_of_the_centre(size):
    for _, mask, centre in draws(size, 40):
        cx, cy = mask_centroid(mask)
        assert np.hypot(cx - centre[0], cy - centre[1]) < 1.0


def test_disc_position_and_size_vary():
    samples = draws(64, 40)
    centres = np.array([c for _, _, c in samples])
    radii = np.array([equivalent_radius(m) for _, m, _ in samples])
    offsets = np.hypot(*(centres - 31.5).T)
    assert centres[:, 0].std() > 6 and centres[:, 1].std() > 2
    assert (offsets > 10).mean() > 0.4  # often far from the image centre
    assert radii.max() > 1.3 * radii.min()


def test_brightest_pixel_often_misses_the_disc():
    far = []
    for image, mask, (x, y) in draws(64, 80):
        gray = cv2.GaussianBlur(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), (5, 5), 1.0)
        by, bx = np.unravel_index(np.argmax(gray), gray.shape)
        far.append(np.hypot(bx - x, by - y) > equivalent_radius(mask))
    assert np.mean(far) >= 0.25


def test_disc_is_brighter_than_its_surround_but_no_global_threshold_segments_it():
    samples = draws(64, 40)
    grays = np.stack([cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) for image, _, _ in samples])
    masks = np.stack([mask for _, mask, _ in samples])
    brighter = []
    for gray, mask in zip(grays, masks, strict=True):
        ring = cv2.dilate(mask.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool) & ~mask
        brighter.append(gray[mask].mean() > gray[ring].mean() + 10)
    assert np.mean(brighter) > 0.9  # the signal is there to learn ...

    def mean_dice(threshold: int) -> float:
        found = grays > threshold
        overlap = (found & masks).sum((1, 2))
        return float(np.mean(2 * overlap / (found.sum((1, 2)) + masks.sum((1, 2)) + 1e-9)))

    assert max(mean_dice(t) for t in range(0, 256, 4)) < 0.6  # ... but not by thresholding


def test_bad_parameters_are_refused_with_the_fix(tmp_path):
    with pytest.raises(ValueError, match="size >= 32"):
        draw_fundus(np.random.default_rng(0), 16)
    with pytest.raises(ValueError, match="at least one image"):
        generate_dataset(tmp_path / "none", n_localize=0, n_segment=0, size=32, progress=False)
    with pytest.raises(ValueError, match="seed=-1"):
        generate_dataset(tmp_path / "neg", n_localize=1, n_segment=1, size=32, seed=-1)
    assert not (tmp_path / "none").exists() and not (tmp_path / "neg").exists()


def test_generate_dataset_writes_both_pools_in_the_canonical_format(tmp_path):
    root = generate_dataset(tmp_path / "syn", n_localize=5, n_segment=3, size=32, progress=False)
    dataset = load_dataset(root)
    assert [s.image_id for s in dataset.centre_only()] == [f"loc_{i:04d}" for i in range(5)]
    assert [s.image_id for s in dataset.masked()] == [f"seg_{i:04d}" for i in range(3)]
    assert check_dataset(root) == []
    rows = (root / "centers.csv").read_text().splitlines()
    assert rows[0] == "image,x,y" and len(rows) == 1 + 8  # masked images have centre rows too
    for sample in dataset.masked():
        loaded = load_sample(sample)
        cx, cy = mask_centroid(loaded.mask)
        assert np.hypot(cx - sample.center[0], cy - sample.center[1]) < 1.0
    params = json.loads((root / PARAMS_FILE).read_text())
    assert params["n_localize"] == 5 and params["n_segment"] == 3 and params["size"] == 32


def test_files_are_byte_identical_by_seed_and_pools_are_independent(tmp_path):
    a = generate_dataset(tmp_path / "a", n_localize=2, n_segment=2, size=32, progress=False)
    b = generate_dataset(tmp_path / "b", n_localize=2, n_segment=2, size=32, progress=False)
    c = generate_dataset(tmp_path / "c", n_localize=4, n_segment=2, size=32, progress=False)
    for sub in ("images/loc_0001.png", "images/seg_0001.png", "masks/seg_0000.png", "centers.csv"):
        assert (a / sub).read_bytes() == (b / sub).read_bytes()
    for sub in ("images/seg_0000.png", "images/seg_0001.png", "masks/seg_0001.png"):
        assert (a / sub).read_bytes() == (c / sub).read_bytes()  # the loc pool size is irrelevant
    d = generate_dataset(tmp_path / "d", n_localize=2, n_segment=2, size=32, seed=1, progress=False)
    assert (a / "images/loc_0000.png").read_bytes() != (d / "images/loc_0000.png").read_bytes()


def test_same_parameters_skip_and_new_parameters_regenerate(tmp_path):
    root = generate_dataset(tmp_path / "syn", n_localize=4, n_segment=2, size=32, progress=False)
    stamps = {p.name: p.stat().st_mtime_ns for p in (root / "images").iterdir()}
    generate_dataset(root, n_localize=4, n_segment=2, size=32, progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in (root / "images").iterdir()} == stamps

    old = (root / "images/loc_0000.png").read_bytes()
    generate_dataset(root, n_localize=2, n_segment=2, size=32, seed=5, progress=False)
    assert (root / "images/loc_0000.png").read_bytes() != old
    assert sorted(p.name for p in (root / "images").iterdir()) == [
        "loc_0000.png",
        "loc_0001.png",
        "seg_0000.png",
        "seg_0001.png",
    ]  # no stale image from the bigger run
    assert json.loads((root / PARAMS_FILE).read_text())["seed"] == 5
    assert check_dataset(root) == []


def test_an_interrupted_run_is_redone(tmp_path):
    root = generate_dataset(tmp_path / "syn", n_localize=3, n_segment=2, size=32, progress=False)
    (root / PARAMS_FILE).unlink()  # as if the run died before its last write
    (root / "images/loc_0002.png").unlink()
    generate_dataset(root, n_localize=3, n_segment=2, size=32, progress=False)
    assert (root / "images/loc_0002.png").is_file() and (root / PARAMS_FILE).is_file()


def test_a_folder_holding_other_images_is_refused(tmp_path):
    (tmp_path / "mine" / "images").mkdir(parents=True)
    (tmp_path / "mine" / "images" / "patient_01.png").write_bytes(b"not ours")
    with pytest.raises(DatasetError, match="patient_01.png.*empty OUT_DIR"):
        generate_dataset(tmp_path / "mine", n_localize=2, n_segment=1, size=32, progress=False)
    assert (tmp_path / "mine" / "images" / "patient_01.png").is_file()


def test_command_line_arguments_and_summary(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="synthetic")
    add_arguments(parser)
    argv = [str(tmp_path / "cli"), "--n-localize", "3", "--n-segment", "2", "--size", "32"]
    args = parser.parse_args(argv + ["--seed", "2"])
    summary = prepare(args)
    assert summary["status"] == "generated"
    assert summary["centre_only"] == 3 and summary["with_mask"] == 2
    assert len(load_dataset(tmp_path / "cli").samples) == 5
    assert prepare(args)["status"] == "up to date (skipped)"
    capsys.readouterr()
    refused = [
        (["--size", "16"], "argument --size: 16 is too small; use a value >= 32"),
        (["--n-segment", "-1"], "argument --n-segment: -1 is too small; use a value >= 0"),
        (["--seed", "x"], "argument --seed: 'x' is not an integer"),
    ]
    for extra, message in refused:
        with pytest.raises(SystemExit) as stopped:
            parser.parse_args(argv[:1] + extra)
        assert stopped.value.code == 2, extra  # argparse's usage error, not a crash or success
        err = capsys.readouterr().err
        assert err.startswith("usage: synthetic") and err.rstrip().endswith(message), err
