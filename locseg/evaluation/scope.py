"""Which images a checkpoint is scored on, and whether it may have trained on them.

The test fold comes from the command line, else the checkpoint's run (``RUN/config_resolved.yaml``),
else a localizer's ``encoder.pt`` (the images it promised never to train on); a fold is never
guessed. A warning says so when the evaluated images include the checkpoint's training images.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from locseg.data.dataset import DatasetError, FundusDataset
from locseg.data.splits import (
    check_fold,
    dataset_splits,
    evaluation_pool,
    excluded_ids_hash,
    splits_path,
)
from locseg.experiments.sweep import ENCODER_FILE
from locseg.inference.options import InferenceError
from locseg.models.encoder_io import EncoderCheckpointError, load_encoder_checkpoint

log = logging.getLogger("locseg.evaluate")


SPLITS = ("test", "all")


# Split parameters when neither the command line nor the checkpoint's run gives one (train's).
SPLIT_DEFAULTS = {"fold": 0, "num_folds": 5, "val_fraction": 0.2, "split_seed": 1234}


RUN_CONFIG = "config_resolved.yaml"


FOLD_FIX = (
    "give data.fold=K (the fold whose test images it was trained without) or data.split=all "
    "(every labelled image, training images included)"
)


def training_run(ckpt: Path) -> dict | None:
    """The data section of the checkpoint's run (``RUN/config_resolved.yaml``), if it is there."""
    path = ckpt.parent.parent / RUN_CONFIG
    if not path.is_file():
        return None
    try:
        data = OmegaConf.to_container(OmegaConf.load(path)).get("data") or {}
    except Exception:  # a damaged or foreign file: evaluate without it
        log.warning("%s: unreadable, split options fall back to the defaults", path)
        return None
    keys = ("root", "fold", "num_folds", "val_fraction", "split_seed")
    return {"config": str(path), **{k: data.get(k) for k in keys}, "pool": data.get("pool") or []}


def encoder_record(ckpt: Path) -> dict | None:
    """What a localizer's run recorded in ``RUN/encoder.pt`` about the images it never saw:
    ``per_fold``, ``fold``, ``dataset``, ``excluded_hash`` (see ``locseg.training.handoff``)."""
    path = ckpt.parent.parent / ENCODER_FILE
    if not path.is_file():
        return None
    try:
        extra = load_encoder_checkpoint(path).get("extra") or {}
    except EncoderCheckpointError as error:
        log.warning("%s", error)
        return None
    return {"path": str(path), **extra} if extra.get("excluded_hash") else None


@dataclass
class TrainingScope:
    """What is known of the images a checkpoint trained on: its run's config and, for a
    localizer, its ``encoder.pt`` (either may be missing)."""

    ckpt: Path
    role: str
    run: dict | None
    encoder: dict | None

    @classmethod
    def of(cls, ckpt: Path, role: str) -> TrainingScope:
        return cls(
            ckpt, role, training_run(ckpt), encoder_record(ckpt) if role == "localizer" else None
        )

    def trained_on(self, root: Path) -> bool:
        return self.run is not None and same_folder(self.run["root"], root)

    def pool_holds(self, root: Path) -> bool:
        """``root`` is one of the localizer's training pool folders (``data.pool``)."""
        pool = (self.run or {}).get("pool") or []
        return self.role == "localizer" and any(same_folder(p, root) for p in pool)

    def encoder_fold(self, dataset: FundusDataset, splits: Mapping | None) -> int | None:
        """The fold of ``dataset`` whose test images a per-fold localizer's encoder.pt excludes."""
        if self.encoder is None or not self.encoder.get("per_fold") or splits is None:
            return None
        for k, entry in enumerate(splits["folds"]):
            if excluded_ids_hash(list(entry["test"])) == self.encoder["excluded_hash"]:
                return k
        return None

    def serves_every_fold(self, dataset: FundusDataset) -> bool:
        """A shared localizer whose encoder.pt excludes every image folds are made of here."""
        if self.encoder is None or self.encoder.get("per_fold"):
            return False
        pool = [s.image_id for s in evaluation_pool(dataset)]
        return self.encoder["excluded_hash"] == excluded_ids_hash(pool)


def same_folder(a: str | Path | None, b: str | Path) -> bool:
    return a is not None and Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def split_options(requested: Mapping, run: dict | None, root: Path) -> dict:
    """Fold parameters: the command line, else the checkpoint's run, else train's defaults.

    The run's fold counts only when it trained on this very folder; its fold scheme
    (``num_folds``, ``val_fraction``, ``split_seed``) is kept for any folder. The fold is None
    when unknown: no fold asked for and no run config (see :func:`resolve_fold`); a run of
    another folder never saw this folder's folds, so its default fold 0 is a fair test.
    """
    options = {}
    for key, default in SPLIT_DEFAULTS.items():
        value = requested.get(key)
        if value is None and run is not None and (key != "fold" or same_folder(run["root"], root)):
            value = run.get(key)
        if value is None and (key != "fold" or run is not None):
            value = default
        options[key] = value
    return options


def split_request(options: Mapping) -> tuple[int, float, int]:
    return int(options["num_folds"]), float(options["val_fraction"]), int(options["split_seed"])


def resolve_fold(
    scope: TrainingScope,
    dataset: FundusDataset,
    options: Mapping,
    cache_dir: Path,
    requested: int | None,
) -> tuple[int, str]:
    """The test fold and where it came from; never a guess.

    The command line first, then the run's config, then a localizer's ``encoder.pt`` (the fold
    whose test images it excludes, or its own fold for a shared localizer that excludes every
    image folds are made of here). Otherwise an :class:`InferenceError` naming the fix.
    """
    if requested is not None:
        return int(requested), "data.fold"
    if options["fold"] is not None:
        return int(options["fold"]), str(scope.run["config"])
    if scope.serves_every_fold(dataset):
        return int(scope.encoder.get("fold") or 0), scope.encoder["path"]
    if scope.encoder is not None and scope.encoder.get("per_fold"):
        splits = dataset_splits(dataset, *split_request(options), cache_dir)
        fold = scope.encoder_fold(dataset, splits)
        if fold is not None:
            return fold, scope.encoder["path"]
    config = scope.ckpt.parent.parent / RUN_CONFIG
    known = f"; {scope.encoder['path']} names other images" if scope.encoder else ""
    raise InferenceError(
        f"{scope.ckpt}: the fold it was trained for is unknown (no {config}{known}), so its "
        f"test images cannot be told from its training images; {FOLD_FIX}"
    )


def select_ids(
    dataset: FundusDataset, role: str, split: str, options: Mapping, cache_dir: Path
) -> tuple[list[str], Path | None]:
    """Image ids to score and the splits file they came from (None for ``split=all``)."""
    if split not in SPLITS:
        raise DatasetError(f"data.split={split!r} is not one of {', '.join(SPLITS)}")
    if split == "all":
        samples = dataset.masked() if role == "segmenter" else dataset.centred()
        if not samples:
            raise DatasetError(
                f"{dataset.root}: no {'masked' if role == 'segmenter' else 'labelled'} image to "
                f"evaluate a {role} on; add masks/ or centers.csv rows."
            )
        return [s.image_id for s in samples], None
    check_fold(int(options["fold"]), int(options["num_folds"]))
    path = splits_path(dataset, cache_dir, *split_request(options))
    splits = dataset_splits(dataset, *split_request(options), cache_dir)
    return list(splits["folds"][int(options["fold"])]["test"]), path


def leakage_warnings(
    scope: TrainingScope,
    dataset: FundusDataset,
    split: str,
    fold: int,
    ids: Sequence[str],
    splits: Mapping | None = None,
) -> list[str]:
    """Say so when the evaluated images include the checkpoint's own training images, and only
    then.

    A localizer's ``encoder.pt`` says which images it never trained on: every image folds are
    made of (a shared localizer: pool folders, or the dataset's centre-only images with no
    patient in the folds), so any fold's test images are unseen, or one fold's test images (a
    per-fold localizer, which trained on the dataset's other images). A segmenter trained on its
    fold's other masked images (its run's config says which fold).
    """
    root = dataset.root
    if scope.pool_holds(root):
        where = "one of the localizer's training pool folders (data.pool)"
        return [f"{root} is {where}: its centred images were its training or validation images"]
    pool_ids = {s.image_id for s in evaluation_pool(dataset)}
    if scope.serves_every_fold(dataset) and set(ids) <= pool_ids:
        return []
    # A per-fold localizer of this dataset (not one of another folder whose ids look alike).
    mine = scope.run is None or scope.trained_on(root)
    own_fold = scope.encoder_fold(dataset, splits) if mine else None
    if own_fold is not None:  # a per-fold localizer of this dataset
        if split == "test" and own_fold == fold:
            return []
        return [seen_warning(own_fold, split, fold, "its encoder.pt excludes only that fold's")]
    if scope.run is not None and scope.run.get("pool") and scope.role == "localizer":
        return []  # trained on its pool folders alone, and this is not one of them
    if not scope.trained_on(root):
        return []
    if split == "all":
        return ["data.split=all on the checkpoint's own dataset includes its training images"]
    shared = scope.role == "localizer" and (
        not scope.encoder.get("per_fold") if scope.encoder else bool(dataset.centre_only())
    )
    if scope.run.get("fold") is not None and int(scope.run["fold"]) != fold and not shared:
        return [seen_warning(int(scope.run["fold"]), split, fold)]
    return []


def known_splits(
    scope: TrainingScope, dataset: FundusDataset, options: Mapping, cache_dir: Path
) -> dict | None:
    """The dataset's folds when a per-fold localizer's encoder.pt is to be matched against them
    (None otherwise, or when the folds cannot be read)."""
    if scope.encoder is None or not scope.encoder.get("per_fold"):
        return None
    try:
        return dataset_splits(dataset, *split_request(options), cache_dir)
    except DatasetError as error:
        log.warning("cannot match %s to this dataset's folds: %s", scope.encoder["path"], error)
        return None


def seen_warning(trained: int, split: str, fold: int, why: str = "") -> str:
    images = f"the test images of fold {fold}" if split == "test" else "the labelled images"
    because = f" ({why} test images)" if why else ""
    return (
        f"the checkpoint was trained for fold {trained} of this dataset{because}, so {images} "
        "were among its training or validation images"
    )
