"""Each converter on a tiny replica of its dataset's published layout (built by the test)."""

from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from locseg.data.converters import common, drishti, folder, idrid, refuge, rimone
from locseg.data.dataset import DatasetError, check_dataset, load_dataset

try:
    from tests.data import replicas
except ImportError:  # tests/ is not a package: pytest puts this folder on sys.path
    import replicas


def run(module, raw: Path, out: Path, *options: str) -> dict:
    """What ``python -m locseg.prepare NAME RAW OUT OPTIONS`` runs."""
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return module.prepare(parser.parse_args([str(raw), str(out), *options]))


def assert_converted(replica: replicas.Replica, out: Path, summary: dict) -> None:
    """The output is sound and holds exactly the replica's images, masks, centres, groups."""
    assert check_dataset(out) == []
    dataset = load_dataset(out)
    expected = replica.expected
    assert sorted(dataset.ids) == sorted(expected)
    n_masks = sum(e.mask is not None for e in expected.values())
    assert (summary["images"], summary["masks"], summary["centres"]) == (
        len(expected),
        n_masks,
        len(expected),
    )
    assert summary["groups"] == len({e.group or name for name, e in expected.items()})
    for sample in dataset.samples:
        want = expected[sample.image_id]
        assert sample.image_path.read_bytes() == want.source.read_bytes()  # copied, not re-encoded
        assert math.dist(sample.center, want.centre) <= 1.0, sample.image_id
        assert sample.group == want.group
        if want.mask is None:
            assert sample.mask_path is None
            continue
        written = cv2.imread(str(sample.mask_path), cv2.IMREAD_UNCHANGED)
        assert set(np.unique(written).tolist()) <= {0, 255}
        assert np.array_equal(written > 0, want.mask), sample.image_id


def assert_flagged(replica: replicas.Replica, summary: dict) -> None:
    if replica.swapped is None:
        assert summary["disagreements"] == []
        return
    (flag,) = summary["disagreements"]
    assert flag.startswith(f"{replica.swapped}:") and "swapped" in flag


# --------------------------------------------------------------------------- each converter


def test_drishti(tmp_path):
    replica = replicas.drishti(tmp_path)
    summary = run(drishti, replica.root, tmp_path / "out")
    assert_converted(replica, tmp_path / "out", summary)
    assert_flagged(replica, summary)
    assert summary["splits"] == {"Training": 2, "Test": 2}
    assert any("drishtiGS_005" in note for note in summary["note_list"])  # no ground truth


def test_drishti_min_experts_sets_the_agreement_threshold(tmp_path):
    replica = replicas.drishti(tmp_path, min_experts=4)
    summary = run(drishti, replica.root, tmp_path / "out", "--min-experts", "4")
    assert_converted(replica, tmp_path / "out", summary)
    areas = {k: int(replicas.drishti_mask(40, 16, k).sum()) for k in (1, 2, 3, 4)}
    assert areas[1] > areas[2] > areas[3] > areas[4]  # the replica's experts really differ


def test_drishti_mask_centres_are_the_centroids_on_request(tmp_path):
    replica = replicas.drishti(tmp_path)
    summary = run(drishti, replica.root, tmp_path / "out", "--center-source", "mask")
    centre = load_dataset(tmp_path / "out").by_id()["drishtiGS_003"].center
    assert math.dist(centre, (40, 12)) <= 1.0  # the swapped published centre is not used
    assert len(summary["disagreements"]) == 1


def test_idrid(tmp_path):
    replica = replicas.idrid(tmp_path)
    summary = run(idrid, replica.root, tmp_path / "out")
    assert_converted(replica, tmp_path / "out", summary)
    assert_flagged(replica, summary)
    assert (summary["part_a_images"], summary["part_c_images"], summary["matched"]) == (3, 5, 2)
    details = json.loads((tmp_path / "out" / common.SUMMARY_FILE).read_text())
    matched = {"IDRiD_01": "train_IDRiD_003", "IDRiD_02": "test_IDRiD_001"}
    assert details["matched_a_to_c"] == matched


def test_idrid_without_matching_keeps_both_parts(tmp_path):
    replica = replicas.idrid(tmp_path)
    summary = run(idrid, replica.root, tmp_path / "out", "--match", "none")
    assert (summary["images"], summary["masks"], summary["disagreements"]) == (8, 3, [])


def test_refuge(tmp_path):
    replica = replicas.refuge(tmp_path)
    summary = run(refuge, replica.root, tmp_path / "out")
    assert_converted(replica, tmp_path / "out", summary)
    assert_flagged(replica, summary)
    assert summary["splits"] == {"train": 2, "validation": 1}
    assert any("T0001" in note for note in summary["note_list"])  # test photo without its GT


def test_refuge_disc_is_rim_plus_cup_for_either_label_encoding():
    labels = replicas.refuge_labels(30, 20)
    disc = replicas.disc(30, 20, 8)
    assert np.array_equal(refuge.disc_from_labels(labels), disc)
    relabelled = np.select([labels == 0, labels == 128], [2, 1], 0).astype(np.uint8)  # 0/1/2
    assert np.array_equal(refuge.disc_from_labels(relabelled), disc)


def test_rimone(tmp_path):
    replica = replicas.rimone(tmp_path)
    summary = run(rimone, replica.root, tmp_path / "out")
    assert_converted(replica, tmp_path / "out", summary)
    assert_flagged(replica, summary)
    assert summary["splits"] == {"train": 2, "test": 2}


def test_folder(tmp_path):
    replica = replicas.folder(tmp_path)
    summary = run(folder, replica.root, tmp_path / "out", *replicas.FOLDER_OPTIONS)
    assert_converted(replica, tmp_path / "out", summary)
    assert_flagged(replica, summary)
    assert any("e.jpg" in note for note in summary["note_list"])  # unlabelled photo skipped


def test_folder_soft_mask_needs_a_threshold(tmp_path):
    replica = replicas.folder(tmp_path)
    mask = replica.root / "gt" / "a_mask.png"
    soft = cv2.GaussianBlur(cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE), (5, 5), 0)
    cv2.imwrite(str(mask), soft)
    with pytest.raises(DatasetError, match="a_mask.png.*--mask-threshold"):
        run(folder, replica.root, tmp_path / "out", *replicas.FOLDER_OPTIONS)
    options = [*replicas.FOLDER_OPTIONS, "--mask-threshold", "127", "--overwrite"]
    summary = run(folder, replica.root, tmp_path / "out", *options)
    assert summary["masks"] == 3 and check_dataset(tmp_path / "out") == []


def test_centre_outside_the_image_is_reported_and_not_written(tmp_path):
    replica = replicas.folder(tmp_path)
    table = replica.root / "labels.csv"
    text = table.read_text().replace("images/a.jpg;40;16", "images/a.jpg;40;160")
    table.write_text(text.replace("images/d.jpg;44;30", "images/d.jpg;440;30"))
    summary = run(folder, replica.root, tmp_path / "out", *replicas.FOLDER_OPTIONS)
    assert check_dataset(tmp_path / "out") == []
    samples = load_dataset(tmp_path / "out").by_id()
    assert "d" not in samples  # centre-only, and its centre is unusable
    assert math.dist(samples["a"].center, (40, 16)) <= 1.0  # the mask centroid stands in
    flags = [f for f in summary["disagreements"] if f.startswith("a:")]
    assert len(flags) == 1 and "outside the 64x48 image" in flags[0]
    assert any(n.startswith("d:") and "outside the 64x48 image" in n for n in summary["note_list"])


# --------------------------------------------------------------------------- bad input


def _drop(path: Path) -> Path:
    shutil.rmtree(path)
    return path.parent


def _drop_refuge_masks(root: Path) -> Path:
    _drop(root / "REFUGE-Training400" / "Annotation-Training400")
    _drop(root / "REFUGE-Validation400-GT")
    return root


BAD_INPUTS = {  # converter, replica, how to break it -> the path the error must name
    "drishti": (drishti, replicas.drishti, lambda r: _drop(r / "Drishti-GS1_files")),
    "idrid": (
        idrid,
        replicas.idrid,
        lambda r: _drop(r / "A. Segmentation" / "2. All Segmentation Groundtruths"),
    ),
    "refuge": (refuge, replicas.refuge, _drop_refuge_masks),
    "rimone": (
        rimone,
        replicas.rimone,
        lambda r: _drop(r / "RIM-ONE_DL_images" / "partitioned_by_hospital").parent,
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_missing_folder_is_an_error_naming_the_path(tmp_path, name):
    module, build, damage = BAD_INPUTS[name]
    replica = build(tmp_path)
    named = damage(replica.root)
    with pytest.raises(DatasetError) as error:
        run(module, replica.root, tmp_path / "out")
    assert str(named) in str(error.value)


def test_folder_missing_images_folder_is_named(tmp_path):
    replica = replicas.folder(tmp_path)
    shutil.rmtree(replica.root / "photos")
    with pytest.raises(DatasetError, match=str(replica.root / "photos")):
        run(folder, replica.root, tmp_path / "out", *replicas.FOLDER_OPTIONS)


def test_existing_output_needs_overwrite(tmp_path):
    replica = replicas.rimone(tmp_path)
    out = tmp_path / "out"
    run(rimone, replica.root, out)
    stale = out / "images" / "stale.png"
    shutil.copyfile(next((out / "images").iterdir()), stale)
    with pytest.raises(DatasetError, match=f"{out}.*--overwrite"):
        run(rimone, replica.root, out)
    run(rimone, replica.root, out, "--overwrite")
    assert not stale.exists() and check_dataset(out) == []


def test_output_inside_the_raw_images_is_refused(tmp_path):
    replica = replicas.folder(tmp_path)
    with pytest.raises(DatasetError, match="raw data"):
        run(folder, replica.root, replica.root, *replicas.FOLDER_OPTIONS)


# --------------------------------------------------------------------------- the centre check


def test_centre_check_accepts_the_centroid_and_explains_a_swap():
    mask = replicas.disc(40, 12, 6)
    assert common.centre_disagreement("a", (40.0, 12.0), mask, 0.5) is None
    assert common.centre_disagreement("a", (41.5, 13.0), mask, 0.5) is None  # within 0.5 radii
    swapped = common.centre_disagreement("a", (12.0, 40.0), mask, 0.5)
    assert swapped.startswith("a:") and "outside the disc mask" in swapped and "swapped" in swapped
    off = common.centre_disagreement("a", (44.0, 12.0), mask, 0.5)  # inside, but far off-centre
    assert off is not None and "outside" not in off and "swapped" not in off


def test_prepare_dispatcher_converts_and_checks(tmp_path, capsys):
    """`python -m locseg.prepare folder RAW OUT ...` as documented: converts, then checks."""
    from locseg.prepare import main as prepare_main

    replica = replicas.folder(tmp_path)
    out = tmp_path / "out"
    assert prepare_main(["folder", str(replica.root), str(out), *replicas.FOLDER_OPTIONS]) == 0
    assert "Dataset is sound" in capsys.readouterr().out
    assert (out / "centers.csv").is_file()
