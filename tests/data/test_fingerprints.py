"""The content-fingerprint leakage guard: copies of a photograph are found, different ones not."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from locseg.data import fingerprints as fp
from locseg.data.dataset import DatasetError
from locseg.data.synthetic import draw_fundus


def fundus(seed: int, size: int = 128) -> np.ndarray:
    return draw_fundus(np.random.default_rng([seed, 7]), size)[0]


def save(path: Path, rgb: np.ndarray, quality: int = 95) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(
        str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    return path


def resized(rgb: np.ndarray, factor: float) -> np.ndarray:
    height, width = rgb.shape[:2]
    size = (round(width * factor), round(height * factor))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR)


COPIES = {  # name -> (pixels of the copy, file suffix, JPEG quality)
    "jpeg_q60": lambda rgb: (rgb, ".jpg", 60),
    "half": lambda rgb: (resized(rgb, 0.5), ".png", 95),
    "three_quarters": lambda rgb: (resized(rgb, 0.75), ".jpg", 90),
    "brighter_30": lambda rgb: (np.clip(rgb.astype(int) + 30, 0, 255).astype(np.uint8), ".png", 95),
    "gamma_0.7": lambda rgb: (np.round(255 * (rgb / 255.0) ** 0.7).astype(np.uint8), ".png", 95),
}


def write_copies(originals: dict[str, np.ndarray], folder: Path) -> dict[Path, str]:
    """Every transformed copy of every original, renamed: copy path -> original name."""
    made = {}
    for name, rgb in originals.items():
        for kind, transform in COPIES.items():
            pixels, suffix, quality = transform(rgb)
            made[save(folder / f"{kind}_of_{name}{suffix}", pixels, quality)] = name
    return made


def assert_copies_caught(originals: dict[str, Path], copies: dict[Path, str], cache: Path):
    pairs = fp.find_duplicates(list(copies), list(originals.values()), cache)
    found = {(pair.query, pair.reference.stem) for pair in pairs}
    assert found == {(copy, originals[name].stem) for copy, name in copies.items()}
    assert max(pair.score for pair in pairs) < fp.DEFAULT_THRESHOLD / 2  # a clear margin


def test_transformed_copies_of_synthetic_photographs_are_caught(tmp_path):
    pixels = {f"photo{seed}": fundus(seed) for seed in range(3)}
    originals = {name: save(tmp_path / "a" / f"{name}.png", rgb) for name, rgb in pixels.items()}
    copies = write_copies(pixels, tmp_path / "b")
    assert_copies_caught(originals, copies, tmp_path / "cache")


def test_transformed_copies_of_real_photographs_are_caught(tmp_path, drions_root):
    originals = {p.stem: p for p in sorted((drions_root / "images").glob("*.jpg"))[10:12]}
    pixels = {
        name: cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for name, p in originals.items()
    }
    copies = write_copies(pixels, tmp_path / "b")
    assert_copies_caught(originals, copies, tmp_path / "cache")


def test_different_synthetic_photographs_are_far_apart(tmp_path):
    paths = [save(tmp_path / f"photo{seed}.jpg", fundus(seed)) for seed in range(8)]
    assert fp.within_duplicates(paths, tmp_path / "cache") == []
    scores = fp.distances(*(fp.fingerprints(paths, tmp_path / "cache"),) * 2)
    off_diagonal = scores[~np.eye(len(paths), dtype=bool)]
    assert off_diagonal.min() > 2 * fp.DEFAULT_THRESHOLD  # measured 0.58 over 360 photos
    assert np.allclose(np.diag(scores), 0.0, atol=1e-5)


def test_different_real_photographs_are_not_duplicates(tmp_path, drions_root):
    paths = fp.folder_images(drions_root)
    assert len(paths) == 109
    assert fp.within_duplicates(paths, tmp_path / "cache") == []


def test_byte_identical_files_score_zero_even_without_detail(tmp_path):
    blank = np.full((40, 60, 3), 90, np.uint8)
    first, second = save(tmp_path / "a.png", blank), save(tmp_path / "b.png", blank)
    other = save(tmp_path / "c.png", blank + 40)  # also blank, but other bytes
    pairs = fp.find_duplicates([first], [first, second, other], tmp_path / "cache")
    assert pairs == [fp.DuplicatePair(first, second, 0.0)]  # a file is not its own duplicate


def test_within_lists_each_pair_once(tmp_path):
    photo = fundus(1)
    paths = [
        save(tmp_path / "a.png", photo),
        save(tmp_path / "b.jpg", photo, quality=70),
        save(tmp_path / "c.png", fundus(2)),
    ]
    pairs = fp.within_duplicates(paths, tmp_path / "cache")
    assert [(p.query.name, p.reference.name) for p in pairs] == [("a.png", "b.jpg")]
    assert 0.0 < pairs[0].score <= fp.DEFAULT_THRESHOLD


def test_cache_makes_the_second_call_identical_without_recomputing(tmp_path, monkeypatch):
    paths = [save(tmp_path / f"photo{seed}.png", fundus(seed, 64)) for seed in range(4)]
    cache = tmp_path / "cache"
    first = fp.fingerprints(paths, cache)
    assert first.shape == (4, 2 * fp.SIZE) and first.dtype == np.float32
    assert len(list(cache.rglob("*.npy"))) == 4

    def no_recompute(gray):
        raise AssertionError("fingerprint recomputed despite the cache")

    monkeypatch.setattr(fp, "fingerprint_image", no_recompute)
    second = fp.fingerprints(paths, cache)
    assert np.array_equal(first, second)
    renamed = paths[0].rename(tmp_path / "renamed.png")  # keyed on content, not on the name
    assert np.array_equal(fp.fingerprints([renamed], cache)[0], first[0])
    monkeypatch.undo()
    save(renamed, fundus(9, 64))  # new content under the same name: recomputed
    assert not np.array_equal(fp.fingerprints([renamed], cache)[0], first[0])


def test_damaged_cache_entry_is_recomputed(tmp_path):
    path = save(tmp_path / "photo.png", fundus(3, 64))
    cache = tmp_path / "cache"
    first = fp.fingerprints([path], cache)
    (entry,) = cache.rglob("*.npy")
    entry.write_bytes(b"not an array")
    assert np.array_equal(fp.fingerprints([path], cache), first)


def test_default_cache_is_beside_the_preprocessing_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCSEG_CACHE_DIR", str(tmp_path / "home_cache"))
    fp.fingerprints([save(tmp_path / "photo.png", fundus(4, 64))])
    assert len(list((tmp_path / "home_cache" / "fingerprints").rglob("*.npy"))) == 1


def test_unreadable_image_names_the_file_and_the_fix(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError, match=r"broken\.jpg: cannot decode.*Re-download"):
        fp.fingerprints([broken], tmp_path / "cache")
    with pytest.raises(DatasetError, match=r"missing\.png: image file not found"):
        fp.fingerprints([tmp_path / "missing.png"], tmp_path / "cache")


def test_match_one_to_one_keeps_the_closest_pairs():
    a, b, x, y = (Path(name) for name in ("a", "b", "x", "y"))
    pairs = [
        fp.DuplicatePair(a, x, 0.05),
        fp.DuplicatePair(b, x, 0.01),
        fp.DuplicatePair(a, y, 0.1),
    ]
    assert fp.match_one_to_one(pairs) == [fp.DuplicatePair(b, x, 0.01), fp.DuplicatePair(a, y, 0.1)]


def test_folder_images_reads_a_dataset_or_a_plain_folder(tmp_path):
    save(tmp_path / "set" / "images" / "b.png", fundus(5, 64))
    save(tmp_path / "set" / "images" / "a.jpg", fundus(6, 64))
    (tmp_path / "set" / "images" / "notes.txt").write_text("not an image")
    assert [p.name for p in fp.folder_images(tmp_path / "set")] == ["a.jpg", "b.png"]
    assert [p.name for p in fp.folder_images(tmp_path / "set" / "images")] == ["a.jpg", "b.png"]
    with pytest.raises(DatasetError, match="nowhere: folder not found"):
        fp.folder_images(tmp_path / "nowhere")
