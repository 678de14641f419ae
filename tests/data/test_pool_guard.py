"""``data.pool`` and the leakage guard: a pool that is, or links to, the evaluated images."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from conftest import make_dataset

from locseg.data.datamodules import LocalizationDataModule
from locseg.data.dataset import DatasetError


def _module(root: Path, pool: list[str]) -> LocalizationDataModule:
    module = LocalizationDataModule(
        root=str(root),
        pool=pool,
        image_size=32,
        batch_size=4,
        num_folds=3,
        augment={"enabled": False},
    )
    module.prepare_data()
    module.setup("fit")
    return module


@pytest.mark.parametrize("spelling", ["same", "trailing_slash", "dotted"])
def test_pool_equal_to_root_is_refused_naming_the_option(tmp_path, spelling):
    root = make_dataset(tmp_path / "root", n_masked=6)
    pool = {
        "same": str(root),
        "trailing_slash": f"{root}/",
        "dotted": str(root / "images" / ".."),
    }[spelling]
    with pytest.raises(DatasetError, match=r"data\.pool=.* is data\.root itself.*Remove it"):
        LocalizationDataModule(root=str(root), pool=[pool])


def test_pool_of_symlinks_to_the_masked_images_drops_every_one(tmp_path):
    """Links are the most certain copies: every linked masked image is dropped and named."""
    root = make_dataset(tmp_path / "root", n_masked=6)
    pool = make_dataset(tmp_path / "pool", n_masked=0, n_centre_only=8, seed=5)
    with (root / "centers.csv").open(newline="") as handle:
        centres = list(csv.DictReader(handle))
    with (pool / "centers.csv").open("a", newline="") as handle:
        writer = csv.writer(handle)
        for row in centres:
            source = next((root / "images").glob(f"{row['image']}.*"))
            (pool / "images" / f"link_{source.name}").symlink_to(source)
            writer.writerow([f"link_{row['image']}", row["x"], row["y"]])
    module = _module(root, [str(pool)])
    assert len(module.dropped) == 6
    assert {p.query.name for p in module.dropped} == {
        f"link_{p.name}" for p in (root / "images").iterdir()
    }
    assert all(p.score == 0.0 and p.registered == 0.0 for p in module.dropped)
    kept = module.selection["train"] + module.selection["val"]
    assert len(kept) == 8 and not any("link_" in ref for ref in kept)
