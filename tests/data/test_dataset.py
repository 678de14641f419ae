"""The canonical format: round-trip, and a clear error for every kind of bad input."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_dataset

from locseg.check_data import main as check_data_main
from locseg.data.dataset import (
    DatasetError,
    check_dataset,
    load_dataset,
    load_sample,
    read_image,
    write_image,
)


def test_round_trip_keeps_pixels_masks_and_centres(tmp_path):
    root = make_dataset(tmp_path / "d", n_masked=3, n_centre_only=2, groups=2)
    dataset = load_dataset(root)
    assert len(dataset.samples) == 5
    assert len(dataset.masked()) == 3 and len(dataset.centre_only()) == 2
    sample = dataset.by_id()["seg_001"]
    loaded = load_sample(sample)
    ys, xs = np.nonzero(loaded.mask)
    assert sample.center == pytest.approx((xs.mean(), ys.mean()), abs=1e-3)
    assert sample.group == "p1"
    assert check_dataset(root) == []


def test_mask_without_csv_row_gets_its_centroid(tmp_path):
    root = make_dataset(tmp_path / "d", n_masked=2)
    (root / "centers.csv").write_text("image,x,y\n")
    dataset = load_dataset(root)
    mask = load_sample(dataset.samples[0]).mask
    ys, xs = np.nonzero(mask)
    assert dataset.samples[0].center == pytest.approx((xs.mean(), ys.mean()))


def test_truncated_jpeg_is_named(tmp_path):
    path = tmp_path / "x.jpg"
    write_image(path, np.full((32, 32, 3), 128, np.uint8))
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(DatasetError, match=r"x\.jpg.*truncated"):
        read_image(path)


def test_corrupt_image_is_named(tmp_path):
    root = make_dataset(tmp_path / "d", n_masked=2)
    (root / "images" / "seg_000.png").write_bytes(b"not a png at all")
    problems = check_dataset(root)
    assert len(problems) == 1 and "seg_000.png" in problems[0] and "cannot decode" in problems[0]


def test_mask_size_mismatch(tmp_path):
    root = make_dataset(tmp_path / "d", n_masked=2)
    write_image(root / "masks" / "seg_001.png", np.zeros((10, 10), np.uint8) + 255)
    (problem,) = check_dataset(root)
    assert "seg_001.png" in problem and "must match" in problem


def test_non_binary_mask_errors_unless_threshold(tmp_path):
    root = make_dataset(tmp_path / "d", n_masked=2)
    mask = np.zeros((48, 48), np.uint8)
    mask[10:20, 10:20] = 200
    mask[12:18, 12:18] = 90
    write_image(root / "masks" / "seg_000.png", mask)
    (problem,) = check_dataset(root)
    assert "not binary" in problem and "mask_threshold" in problem
    assert check_dataset(root, mask_threshold=127) == []


def test_centre_outside_image(tmp_path):
    root = make_dataset(tmp_path / "d", n_masked=2)
    (root / "centers.csv").write_text("image,x,y\nseg_000,10,99\nseg_001,5,5\n")
    (problem,) = check_dataset(root)
    assert "seg_000.png" in problem and "outside" in problem


def test_csv_row_for_missing_image(tmp_path):
    root = make_dataset(tmp_path / "d", n_masked=2)
    (root / "centers.csv").write_text("image,x,y\nseg_000,10,10\nghost.png,5,5\n")
    with pytest.raises(DatasetError, match=r"centers\.csv:3.*ghost\.png.*not in images/"):
        load_dataset(root)


def test_duplicate_ids(tmp_path):
    root = make_dataset(tmp_path / "d", n_masked=2)
    (root / "centers.csv").write_text("image,x,y\nseg_000,10,10\nseg_000,5,5\n")
    with pytest.raises(DatasetError, match="duplicate row"):
        load_dataset(root)
    (root / "centers.csv").unlink()
    write_image(root / "images" / "seg_000.jpg", np.zeros((48, 48, 3), np.uint8))
    with pytest.raises(DatasetError, match="share the id 'seg_000'"):
        load_dataset(root)


def test_empty_and_missing_folders(tmp_path):
    with pytest.raises(DatasetError, match="not found.*locseg.prepare synthetic"):
        load_dataset(tmp_path / "nowhere")
    (tmp_path / "empty" / "images").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no images found"):
        load_dataset(tmp_path / "empty")


def test_check_data_cli_exit_codes(tmp_path, capsys):
    root = make_dataset(tmp_path / "d", n_masked=3)
    assert check_data_main([str(root)]) == 0
    (root / "images" / "seg_002.png").write_bytes(b"broken")
    assert check_data_main([str(root)]) == 1
    assert "seg_002.png" in capsys.readouterr().out


def test_drions_loads_all_109_images(drions_root):
    dataset = load_dataset(drions_root)
    assert len(dataset.samples) == 109 and len(dataset.masked()) == 109
    assert "image_101" not in dataset.ids
    assert check_dataset(drions_root) == []
