"""Tiny replicas of the published layouts of public optic-disc datasets, built in tmp_path.

Each builder writes a few 64x48 photographs (a bright disc on a smooth random background)
with labels in the dataset's own layout, file names and label encodings, and returns a
:class:`Replica`: the raw folder and what the canonical dataset should then hold. Where the
dataset publishes disc centres, one of them is written with x and y swapped (or row and column
mixed up), and the converter must report it.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

WIDTH, HEIGHT = 64, 48


@dataclass
class Expected:
    source: Path  # the raw photograph the canonical image must be a copy of
    centre: tuple[float, float]  # the centre centers.csv must hold
    mask: np.ndarray | None = None  # the disc mask masks/ must hold
    group: str | None = None


@dataclass
class Replica:
    root: Path
    expected: dict[str, Expected]
    swapped: str | None = None  # canonical id whose published centre was written swapped


# --------------------------------------------------------------------------- drawing


def disc(cx: int, cy: int, radius: int) -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    cv2.circle(mask, (cx, cy), radius, 1, thickness=-1)
    return mask.astype(bool)


def photo(cx: int, cy: int, radius: int, seed: int) -> np.ndarray:
    """RGB fundus-like picture: a smooth random background and a bright disc."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((4, 5, 3)).astype(np.float32)
    background = cv2.resize(coarse, (WIDTH, HEIGHT), interpolation=cv2.INTER_CUBIC)
    image = np.clip(40 + 150 * background * np.array([1.0, 0.5, 0.3]), 0, 255).astype(np.uint8)
    image[disc(cx, cy, radius)] = (250, 230, 180)
    return image


def save(path: Path, rgb: np.ndarray, quality: int = 95) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if rgb.ndim == 3 else rgb
    jpeg = path.suffix.lower() in (".jpg", ".jpeg")
    assert cv2.imwrite(str(path), pixels, [cv2.IMWRITE_JPEG_QUALITY, quality] if jpeg else [])
    return path


def write_text(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding=encoding)
    return path


def centre_of(mask: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(mask)
    return float(xs.mean()), float(ys.mean())


# --------------------------------------------------------------------------- Drishti-GS1

EXPERT_RADII = (5, 6, 7, 8)


def drishti_soft_map(cx: int, cy: int) -> np.ndarray:
    """Four nested expert discs averaged as Drishti does: grey = round(255 * k / 4)."""
    count = sum(disc(cx, cy, r).astype(np.uint8) for r in EXPERT_RADII)
    return np.round(count * 255.0 / 4).astype(np.uint8)


def drishti_mask(cx: int, cy: int, min_experts: int) -> np.ndarray:
    return sum(disc(cx, cy, r).astype(np.uint8) for r in EXPERT_RADII) >= min_experts


def drishti(tmp: Path, min_experts: int = 2) -> Replica:
    """Drishti-GS1_files/{Training/GT, Test/Test_GT}; nested once, as the zip unpacks."""
    root = tmp / "drishti_raw"
    base = root / "Drishti-GS1_files" / "Drishti-GS1_files"
    cases = [  # split, GT folder, id, centre, centre file written swapped
        ("Training", "GT", "drishtiGS_002", (40, 16), False),
        ("Training", "GT", "drishtiGS_004", (20, 30), False),
        ("Test", "Test_GT", "drishtiGS_001", (44, 30), False),
        ("Test", "Test_GT", "drishtiGS_003", (40, 12), True),
    ]
    expected = {}
    for seed, (split, gt, stem, (cx, cy), swap) in enumerate(cases):
        source = save(base / split / "Images" / f"{stem}.png", photo(cx, cy, 8, seed))
        truth = base / split / gt / stem
        save(truth / "SoftMap" / f"{stem}_ODsegSoftmap.png", drishti_soft_map(cx, cy))
        save(truth / "SoftMap" / f"{stem}_cupsegSoftmap.png", drishti_soft_map(cx, cy) // 2)
        row_col = f"{cx} {cy}" if swap else f"{cy} {cx}"  # published as "row col"
        write_text(truth / "AvgBoundary" / f"{stem}_diskCenter.txt", row_col + "\n")
        write_text(truth / f"{stem}_cdrValues.txt", "0.5 0.5 0.5 0.5\n")
        centre = (cy, cx) if swap else (cx, cy)
        expected[stem] = Expected(source, centre, drishti_mask(cx, cy, min_experts))
    save(base / "Test" / "Images" / "drishtiGS_005.png", photo(30, 20, 8, 9))  # no ground truth
    return Replica(root, expected, swapped="drishtiGS_003")


# --------------------------------------------------------------------------- IDRiD


def idrid_markups(path: Path, rows: list[tuple[str, int, int]]) -> None:
    """The published markup CSV: BOM, header, padding columns and trailing blank rows."""
    lines = ["Image No,X- Coordinate,Y - Coordinate,,,"]
    lines += [f"{name},{x},{y},,," for name, x, y in rows]
    lines += [",,,,,"] * 3
    write_text(path, "\n".join(lines) + "\n", encoding="utf-8-sig")


def idrid(tmp: Path) -> Replica:
    """Parts A (masks) and C (centres); two Part A photographs are also in Part C."""
    root = tmp / "idrid_raw"
    part_a, part_c = root / "A. Segmentation", root / "C. Localization" / "C. Localization"
    a_images, a_truth = part_a / "1. Original Images", part_a / "2. All Segmentation Groundtruths"
    c_images = part_c / "1. Original Images"
    c_truth = part_c / "2. Groundtruths" / "1. Optic Disc Center Location"
    photos = {  # photograph -> (centre, seed)
        "P1": ((40, 16), 1),
        "P2": ((40, 12), 2),
        "P3": ((20, 30), 3),
        "P4": ((44, 30), 4),
        "P5": ((16, 14), 5),
        "P6": ((30, 24), 6),
    }
    pixels = {name: photo(*centre, 7, seed) for name, (centre, seed) in photos.items()}
    a_cases = [("a. Training Set", "IDRiD_01", "P1"), ("a. Training Set", "IDRiD_02", "P2")]
    a_cases += [("b. Testing Set", "IDRiD_55", "P3")]
    c_cases = {
        "a. Training Set": [("IDRiD_001", "P4"), ("IDRiD_002", "P5"), ("IDRiD_003", "P1")],
        "b. Testing Set": [("IDRiD_001", "P2"), ("IDRiD_002", "P6")],
    }
    expected = {}
    for split, stem, name in a_cases:
        (cx, cy), _ = photos[name]
        source = save(a_images / split / f"{stem}.jpg", pixels[name], quality=90)
        red = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
        red[disc(cx, cy, 7)] = (255, 0, 0)  # coloured OD mask, as a TIFF
        save(a_truth / split / "5. Optic Disc" / f"{stem}_OD.tif", red)
        save(a_truth / split / "1. Microaneurysms" / f"{stem}_MA.tif", red * 0)
        expected[stem] = Expected(source, centre_of(disc(cx, cy, 7)), disc(cx, cy, 7))
    for split, cases in c_cases.items():
        word = "Training" if split.startswith("a") else "Testing"
        split_key = "train" if word == "Training" else "test"
        rows = []
        for stem, name in cases:
            (cx, cy), _ = photos[name]
            if name == "P2":  # the same file as Part A's IDRiD_02, centre published swapped
                target = c_images / split / f"{stem}.jpg"
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(expected["IDRiD_02"].source, target)
                rows.append((stem, cy, cx))
                expected["IDRiD_02"].centre = (cy, cx)
                continue
            source = save(c_images / split / f"{stem}.jpg", pixels[name], quality=95)
            rows.append((stem, cx, cy))
            if name == "P1":  # the same photograph as Part A's IDRiD_01, re-encoded
                expected["IDRiD_01"].centre = (cx, cy)
            else:
                expected[f"{split_key}_{stem}"] = Expected(source, (cx, cy))
        letter = "a" if word == "Training" else "b"
        idrid_markups(c_truth / f"{letter}. IDRiD_OD_Center_{word} Set_Markups.csv", rows)
        fovea = part_c / "2. Groundtruths" / "2. Fovea Center Location"
        fovea_rows = [(stem, 1, 1) for stem, _ in cases]
        idrid_markups(fovea / f"IDRiD_Fovea_Center_{word} Set_Markups.csv", fovea_rows)
    return Replica(root, expected, swapped="IDRiD_02")


# --------------------------------------------------------------------------- REFUGE


def refuge_labels(cx: int, cy: int) -> np.ndarray:
    """255 background, 128 rim, 0 cup: the REFUGE Disc_Cup_Masks encoding."""
    labels = np.full((HEIGHT, WIDTH), 255, np.uint8)
    labels[disc(cx, cy, 8)] = 128
    labels[disc(cx, cy, 4)] = 0
    return labels


def refuge(tmp: Path) -> Replica:
    root = tmp / "refuge_raw"
    train, valid = root / "REFUGE-Training400", root / "REFUGE-Validation400"
    cases = [  # photograph, mask (None: test image without its GT), centre
        (train / "Training400" / "Glaucoma" / "g0001.jpg",
         train / "Annotation-Training400" / "Disc_Cup_Masks" / "Glaucoma" / "g0001.bmp", (40, 16)),
        (train / "Training400" / "Non-Glaucoma" / "n0001.jpg",
         train / "Annotation-Training400" / "Disc_Cup_Masks" / "Non-Glaucoma" / "n0001.bmp",
         (20, 30)),
        (valid / "REFUGE-Validation400" / "V0001.jpg",
         root / "REFUGE-Validation400-GT" / "Disc_Cup_Masks" / "V0001.bmp", (44, 30)),
        (root / "REFUGE-Test400" / "Test400" / "T0001.jpg", None, (30, 24)),
    ]  # fmt: skip
    expected = {}
    for seed, (image_path, mask_path, (cx, cy)) in enumerate(cases):
        source = save(image_path, photo(cx, cy, 8, seed))
        if mask_path is not None:
            save(mask_path, refuge_labels(cx, cy))
            expected[image_path.stem] = Expected(source, (cx, cy), disc(cx, cy, 8))
    illustration = train / "Annotation-Training400" / "Disc_Cup_Fovea_Illustration" / "g0001.jpg"
    save(illustration, photo(40, 16, 8, 0))
    write_text(train / "Annotation-Training400" / "Fovea_location.xlsx", "not a spreadsheet")
    return Replica(root, expected, swapped=None)


# --------------------------------------------------------------------------- RIM-ONE DL


def dcseg(cx: int, cy: int, radius: int) -> str:
    """DCSeg TXT: a title line, the centre (x, y), then 16 contour points (x, y), 1-based."""
    angles = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    lines = ["DCSeg", str(cx + 1), str(cy + 1)]
    for angle in angles:
        x, y = cx + radius * np.cos(angle), cy + radius * np.sin(angle)
        lines += [str(round(x) + 1), str(round(y) + 1)]
    return "\n".join(lines) + "\n"


def rimone(tmp: Path) -> Replica:
    root = tmp / "rimone_raw"
    images = root / "RIM-ONE_DL_images"
    refs = root / "RIM-ONE_DL_reference_segmentations"
    cases = [  # set, class, stem, centre, swapped DCSeg centre, disc suffix spelling
        ("training_set", "glaucoma", "r3_G-8-R", (40, 16), False, "Disc-T"),
        ("training_set", "normal", "r1_Im001", (20, 30), False, "DISC-T"),
        ("test_set", "glaucoma", "r3_G-8-L", (44, 30), False, "Disc-T"),
        ("test_set", "normal", "r2_Im004", (40, 12), True, "Disc-T"),
    ]
    expected = {}
    for seed, (subset, label, stem, (cx, cy), swap, spelling) in enumerate(cases):
        pixels = photo(cx, cy, 8, seed)
        source = save(images / "partitioned_by_hospital" / subset / label / f"{stem}.png", pixels)
        other = "test_set" if subset == "training_set" else "training_set"
        save(images / "partitioned_randomly" / other / label / f"{stem}.png", pixels)
        mask = disc(cx, cy, 8)
        save(refs / label / f"{stem}-1-{spelling}.png", mask.astype(np.uint8) * 255)
        save(refs / label / f"{stem}-1-Cup-T.png", disc(cx, cy, 4).astype(np.uint8) * 255)
        save(refs / label / f"{stem}-2-Disc-T.png", disc(cx, cy, 6).astype(np.uint8) * 255)
        published = dcseg(cy, cx, 8) if swap else dcseg(cx, cy, 8)
        write_text(refs / label / f"{stem}-1-Disc-T.txt", published)
        group = "r3_G-8" if stem.startswith("r3_") else None
        expected[stem] = Expected(source, centre_of(mask), mask, group)
    return Replica(root, expected, swapped="r2_Im004")


# --------------------------------------------------------------------------- any folder

FOLDER_OPTIONS = [
    "--images", "photos", "--masks", "gt", "--mask-suffix", "_mask", "--centers", "labels.csv",
    "--id-col", "filename", "--x-col", "col", "--y-col", "row", "--group-col", "patient",
]  # fmt: skip


def folder(tmp: Path) -> Replica:
    """photos/ + gt/<stem>_mask.png + a semicolon CSV with its own column names."""
    root = tmp / "folder_raw"
    cases = [  # file, centre, mask?, patient, swapped row
        ("a.jpg", (40, 16), True, "p1", False),
        ("b.png", (20, 30), True, "p1", False),
        ("c.jpg", (40, 12), True, "p2", True),
        ("d.jpg", (44, 30), False, "p3", False),
    ]
    rows, expected = ["filename;col;row;patient"], {}
    for seed, (name, (cx, cy), has_mask, patient, swap) in enumerate(cases):
        source = save(root / "photos" / name, photo(cx, cy, 8, seed))
        stem = Path(name).stem
        mask = disc(cx, cy, 8) if has_mask else None
        if mask is not None:
            save(root / "gt" / f"{stem}_mask.png", mask.astype(np.uint8) * 255)
        x, y = (cy, cx) if swap else (cx, cy)
        rows.append(f"images/{name};{x};{y};{patient}")
        expected[stem] = Expected(source, (x, y), mask, patient)
    save(root / "photos" / "e.jpg", photo(30, 24, 8, 7))  # unlabelled
    write_text(root / "labels.csv", "\n".join(rows) + "\n")
    return Replica(root, expected, swapped="c")
