"""``python -m locseg.check_data``: validity as before, plus near-duplicate photographs."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
from rich.console import Console

from locseg import check_data
from locseg.data.dataset import DatasetWriter
from locseg.data.synthetic import draw_fundus


def photo(seed: int) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    return draw_fundus(np.random.default_rng([seed, 11]), 96)


def write_jpeg(path: Path, rgb: np.ndarray, quality: int = 60) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    assert cv2.imwrite(str(path), bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return path


def make_folders(tmp_path: Path, inner_copy: bool = True) -> tuple[Path, Path]:
    """DIR: seg_0..3 and seg_9 (a half-size copy of seg_1 unless not ``inner_copy``).

    OTHER: a re-encoded copy of seg_2 and two other photographs.
    """
    root = tmp_path / "dir"
    with DatasetWriter(root) as writer:
        for seed in range(4):
            writer.add(f"seg_{seed}", *photo(seed))
        image, mask, (x, y) = photo(1)
        if not inner_copy:
            image, mask, (x, y) = photo(30)
        half = cv2.resize(image, (48, 48), interpolation=cv2.INTER_AREA)
        writer.add("seg_9", half, mask[::2, ::2], (x / 2, y / 2))
    other = tmp_path / "other"
    write_jpeg(other / "images" / "pool_a.jpg", photo(2)[0])
    write_jpeg(other / "images" / "pool_b.jpg", photo(20)[0])
    write_jpeg(other / "images" / "pool_c.jpg", photo(21)[0])
    return root, other


def read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def test_duplicates_csv_lists_pairs_within_and_against(tmp_path, capsys):
    root, other = make_folders(tmp_path)
    out = tmp_path / "dups.csv"
    argv = [str(root), "--against", str(other), "--duplicates-csv", str(out)]
    assert check_data.main(argv) == 0  # duplicates are information, not an error
    columns, rows = read_csv(out)
    assert columns == ["image", "other_root", "other_image", "score", "registered"]
    pairs = [(r["image"], r["other_root"], r["other_image"]) for r in rows]
    assert pairs == [("seg_1", str(root), "seg_9"), ("seg_2", str(other), "pool_a")]
    assert all(0.0 <= float(r["score"]) <= check_data.DEFAULT_THRESHOLD for r in rows)
    assert all(0.0 <= float(r["registered"]) <= check_data.REGISTERED_THRESHOLD for r in rows)
    printed = capsys.readouterr().out
    assert "Dataset is sound" in printed and "2 near-duplicate pair(s)" in printed


def test_without_against_lists_duplicates_inside_the_folder(tmp_path, capsys):
    root, _ = make_folders(tmp_path)
    assert check_data.main([str(root)]) == 0
    printed = capsys.readouterr().out
    assert "1 near-duplicate pair(s)" in printed and "seg_9" in printed


def test_no_duplicates_flag_skips_the_search(tmp_path, capsys):
    root, _ = make_folders(tmp_path)
    assert check_data.main([str(root), "--no-duplicates"]) == 0
    assert "near-duplicate" not in capsys.readouterr().out


def test_no_pairs_still_writes_the_header(tmp_path, capsys):
    root, _ = make_folders(tmp_path, inner_copy=False)
    out = tmp_path / "dups.csv"
    assert check_data.main([str(root), "--duplicates-csv", str(out)]) == 0
    assert read_csv(out) == (["image", "other_root", "other_image", "score", "registered"], [])
    assert "No near-duplicate photographs" in capsys.readouterr().out


def test_invalid_dataset_fails_as_before_and_skips_the_search(tmp_path, capsys):
    root, other = make_folders(tmp_path)
    (root / "images" / "seg_0.png").write_bytes(b"broken")
    out = tmp_path / "dups.csv"
    argv = [str(root), "--against", str(other), "--duplicates-csv", str(out)]
    assert check_data.main(argv) == 1
    printed = capsys.readouterr().out
    assert "seg_0.png" in printed and "search skipped" in printed
    assert not out.exists()


def test_unreadable_other_folder_fails_naming_it(tmp_path, capsys):
    root, _ = make_folders(tmp_path)
    missing = tmp_path / "nowhere"
    assert check_data.main([str(root), "--against", str(missing)]) == 1
    assert f"{missing}: folder not found" in capsys.readouterr().out.replace("\n", "")


def test_registered_threshold_option_decides(tmp_path, capsys):
    """``--registered-threshold 0`` keeps only identical files: the re-encoded copies go."""
    root, other = make_folders(tmp_path)
    out = tmp_path / "dups.csv"
    argv = [str(root), "--against", str(other), "--duplicates-csv", str(out)]
    assert check_data.main([*argv, "--registered-threshold", "0"]) == 0
    assert read_csv(out)[1] == []
    assert "registered <= 0" not in capsys.readouterr().out  # no table when nothing is found


def test_same_photograph_processed_differently_is_listed(tmp_path, capsys):
    """idrid_c_0306 is IDRiD_39 processed differently: fingerprint 0.161, over the old 0.15."""
    shared = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    od, centres = shared / "idrid-od", shared / "idrid-centres"
    if not (od.is_dir() and centres.is_dir()):
        pytest.skip(f"{od} or {centres} not found (../shared is absent on this machine)")
    folder = tmp_path / "one"
    folder.mkdir()
    (folder / "idrid_c_0306.jpg").symlink_to(centres / "images" / "idrid_c_0306.jpg")
    out = tmp_path / "dups.csv"
    assert check_data.duplicates_report(str(folder), [str(od)], 0.6, str(out), Console()) == 0
    rows = read_csv(out)[1]
    assert [(r["image"], r["other_image"]) for r in rows] == [("idrid_c_0306", "IDRiD_39")]
    assert float(rows[0]["score"]) > 0.15 and float(rows[0]["registered"]) < 0.1
