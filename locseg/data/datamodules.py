"""The DataModule family: one base (dataset, cache, folds, fractions) and a subclass per task.

Both tasks read the same preprocessed cache and the same persisted splits, so the test fold of
``data.fold`` is identical for the localizer, every fraction and every arm (a paired design).
The localizer may also learn from other folders (``data.pool``): centre-labelled photographs of
any size, kept free of copies of the evaluated images by content. Batches are dicts of tensors;
the modules never see a file name (``index`` maps a row of ``data.root`` back to its id).
"""

from __future__ import annotations

import csv
from abc import abstractmethod
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from locseg.data.augment import apply_augmentation, build_augmentation, seed_augmentation
from locseg.data.dataset import DatasetError, FundusDataset, load_dataset
from locseg.data.fingerprints import DuplicatePair, find_duplicates
from locseg.data.preprocess import (
    PreprocessConfig,
    PreprocessedSet,
    default_cache_dir,
    preprocess_dataset,
)
from locseg.data.splits import (
    budget_split,
    check_fold,
    dataset_splits,
    evaluation_pool,
    excluded_ids_hash,
    fraction_prefix,
    localization_pool,
    split_validation,
    splits_digest,
)
from locseg.io import atomic_path

Item = tuple[PreprocessedSet, int]  # one image: its preprocessed set and its row there


def seed_worker(worker_id: int) -> None:
    """Give each loader worker its own augmentation stream, derived from the loader's seed.

    Workers fork the parent's generator state, so unseeded they would all apply one sequence.
    ``torch.initial_seed()`` in a worker is the loader's base seed + worker id: it follows
    ``pl.seed_everything`` and differs between workers.
    """
    info = torch.utils.data.get_worker_info()
    samples = info.dataset if info is not None else None
    if isinstance(samples, FundusSamples):
        samples.reseed(torch.initial_seed() % 2**32)


def pool_roots(root: Path, pool: list[str] | None) -> list[Path]:
    """The ``data.pool`` folders; one that is ``data.root`` itself is refused.

    Such a pool would hand the localizer every evaluated image (the guard drops them all as
    copies, leaving nothing that is not already ``data.root``'s own centres).
    """
    roots = [Path(p).expanduser() for p in (pool or [])]
    for folder in roots:
        if folder.resolve() == Path(root).expanduser().resolve():
            raise DatasetError(
                f"data.pool={folder} is data.root itself: a pool must hold other photographs "
                "than the evaluated ones. Remove it from data.pool (leave data.pool empty to "
                "localize on data.root's own centres)."
            )
    return roots


class FundusSamples(Dataset):
    """Rows of preprocessed sets as dicts of tensors, augmented on the fly when asked."""

    def __init__(self, items: list[Item], augmentation=None):
        self.items, self.augmentation = items, augmentation

    def __len__(self) -> int:
        return len(self.items)

    def reseed(self, seed: int) -> None:
        seed_augmentation(self.augmentation, seed)

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        data, row = self.items[item]
        size = data.config.image_size
        image = np.array(data.images[row])
        mask = np.array(data.masks[row])
        center_px = data.centers[row] * size - 0.5
        image, mask, center_px = apply_augmentation(self.augmentation, image, mask, center_px)
        return {
            "image": torch.from_numpy(image).unsqueeze(0).float().div_(255.0),
            "mask": torch.from_numpy(np.ascontiguousarray(mask)).unsqueeze(0).float(),
            "center": torch.from_numpy((center_px + 0.5) / size).float(),
            "native_size": torch.from_numpy(data.native_sizes[row]),
            # the native px the S x S input shows (= native_size without data.preprocess.crop_fov)
            "frame_size": torch.tensor(data.frame(row).as_list()[2:], dtype=torch.float32),
            "radius": torch.tensor(data.radii[row]),
            "index": torch.tensor(row),
        }


class FundusDataModule(pl.LightningDataModule):
    """Dataset folder -> cached preprocessing -> folds and fractions -> DataLoaders."""

    def __init__(
        self,
        root: str,
        name: str = "dataset",
        fold: int = 0,
        fraction: float = 1.0,
        num_folds: int = 5,
        val_fraction: float = 0.2,
        split_seed: int = 1234,
        image_size: int = 64,
        batch_size: int = 8,
        num_workers: int = 0,
        pin_memory: bool = False,
        mask_threshold: int | None = None,
        preprocess: dict | None = None,
        augment: dict | None = None,
        cache_dir: str | None = None,
        seed: int = 0,
        pool: list[str] | None = None,
    ):
        super().__init__()
        check_fold(fold, num_folds)
        self.root, self.name = Path(root).expanduser(), name
        self.fold, self.fraction, self.num_folds = fold, fraction, num_folds
        self.val_fraction, self.split_seed = val_fraction, split_seed
        self.batch_size, self.num_workers, self.pin_memory = batch_size, num_workers, pin_memory
        self.mask_threshold = mask_threshold
        self.preprocess_config = PreprocessConfig(image_size=image_size, **(preprocess or {}))
        self.augment_options = dict(augment or {})
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.seed = seed
        self.pool_roots = pool_roots(self.root, pool)
        self.dataset: FundusDataset | None = None
        self.data: PreprocessedSet | None = None
        self.selection: dict[str, list[str]] = {}
        self.splits: dict = {}
        self.lookup: dict[str, Item] = {}  # image reference -> (set, row)
        self.paths: dict[str, Path] = {}  # image reference -> its file

    # ------------------------------------------------------------------ set-up

    def prepare_data(self) -> None:
        """Build the cache and the splits file once (rank 0 only under DDP).

        Lightning calls this again before every ``trainer.test``: a loaded module keeps its state
        (e.g. the test fold set by :meth:`LocalizationDataModule.use_test_fold`).
        """
        if self.data is None:
            self._load()

    def setup(self, stage: str | None = None) -> None:
        if self.data is None:
            self._load()

    def _load(self) -> None:
        self.dataset, self.data = self._register(self.root, prefix="")
        self.splits = dataset_splits(
            self.dataset, self.num_folds, self.val_fraction, self.split_seed, self.cache_dir
        )
        self.selection = self.select(self.splits)
        for part, ids in self.selection.items():
            if not ids:
                raise DatasetError(
                    f"{self.root}: the {part} set of fold {self.fold} is empty; "
                    "add images or lower data.num_folds / data.val_fraction."
                )

    def _register(self, root: Path, prefix: str) -> tuple[FundusDataset, PreprocessedSet]:
        """Load and preprocess one folder; its images become references ``prefix + id``."""
        dataset = load_dataset(root, self.mask_threshold)
        data = preprocess_dataset(
            dataset, self.preprocess_config, self.cache_dir, self.mask_threshold
        )
        by_id = dataset.by_id()
        for row, image_id in enumerate(data.ids):
            self.lookup[prefix + image_id] = (data, row)
            self.paths[prefix + image_id] = by_id[image_id].image_path
        return dataset, data

    @abstractmethod
    def select(self, splits: dict) -> dict[str, list[str]]:
        """Image references of the train, val and test sets for this task, fold and fraction."""

    # ------------------------------------------------------------------ facts for the run

    def items(self, part: str) -> list[Item]:
        return [self.lookup[ref] for ref in self.selection[part]]

    def rows(self, part: str) -> list[int]:
        """Rows of ``data.root``'s set (segmentation and test images live there)."""
        return [row for _, row in self.items(part)]

    def id_of(self, row: int) -> str:
        return self.data.ids[row]

    def counts(self) -> dict[str, int]:
        return {f"n_{part}": len(ids) for part, ids in self.selection.items()}

    def mean_train_center(self) -> tuple[float, float]:
        """Mean normalised training centre: the constant-prediction baseline for localization."""
        centers = np.stack([data.centers[row] for data, row in self.items("train")])
        u, v = centers.mean(axis=0)
        return float(u), float(v)

    def signature(self) -> dict:
        """What a model trained on this data must be given again at inference."""
        return self.preprocess_config.as_dict()

    def identity(self) -> dict[str, str]:
        """What a result depends on beyond the config: the folds and the cached pixels."""
        caches = sorted({data.path.name for data, _ in self.lookup.values()})
        return {"splits": splits_digest(self.splits), "cache": ",".join(caches)}

    def test_ids(self, fold: int | None = None) -> list[str]:
        return list(self.splits["folds"][self.fold if fold is None else fold]["test"])

    def fold_test_hash(self) -> str:
        """Identity of this fold's test images, which a localizer for it must never have seen."""
        return excluded_ids_hash(self.test_ids())

    def masked_hash(self) -> str:
        """Identity of every evaluated image: each is a test image in some fold."""
        return excluded_ids_hash([s.image_id for s in evaluation_pool(self.dataset)])

    # ------------------------------------------------------------------ loaders

    # Whole photographs: no crops, no test centres to place (the crop module overrides these).
    centre_source: str | None = None
    # Why the test fold is not scored, or None (a crop-scale localizer never searches a photograph).
    test_skipped: str | None = None

    def test_crops(self):
        return None

    def val_crops(self):
        return None

    def samples(self, part: str, augmentation, train: bool) -> FundusSamples:
        """The images of ``part`` as a Dataset (subclasses serve other views, e.g. crops)."""
        return FundusSamples(self.items(part), augmentation)

    def _loader(self, part: str, train: bool) -> DataLoader:
        augmentation = build_augmentation(**self.augment_options) if train else None
        samples = self.samples(part, augmentation, train)
        samples.reseed(self.seed)  # the main process's stream (num_workers=0)
        return DataLoader(
            samples,
            batch_size=self.batch_size,
            shuffle=train,
            drop_last=train and len(self.selection[part]) > self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory,
            worker_init_fn=seed_worker,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)


class SegmentationDataModule(FundusDataModule):
    """Image -> mask over the masked pool: a label budget of the fold's other masks."""

    task = "segment"

    def select(self, splits: dict) -> dict[str, list[str]]:
        if not self.dataset.masked():
            raise DatasetError(
                f"{self.root}: no image has a mask in masks/, so there is nothing to segment. "
                "Use this folder to localize (+phase=localize) or as data.pool=[...]."
            )
        entry = splits["folds"][self.fold]
        groups = {s.image_id: s.group_id for s in self.dataset.samples}
        groups.update(splits.get("joined") or {})  # photographs of one eye: one patient
        train, val = budget_split(entry["order"], self.fraction, self.val_fraction, groups)
        return {"train": train, "val": val, "test": list(entry["test"])}


class LocalizationDataModule(FundusDataModule):
    """Image -> centre over the localization pool, tested on the fold's segmentation test set.

    Without ``pool`` the localizer learns from ``root``'s own centres (see
    :func:`~locseg.data.splits.localization_pool`). With ``pool`` it learns from those folders
    only and serves every fold. Either way, every candidate that is a copy (by content) of an
    image it must never see (the fold's test images, or every evaluated image for a shared
    localizer) is dropped first; ``dropped`` lists the pairs.
    """

    task = "localize"

    def select(self, splits: dict) -> dict[str, list[str]]:
        candidates, self.per_fold = self._candidates(splits)
        protected = (
            self.test_ids()
            if self.per_fold
            else [s.image_id for s in evaluation_pool(self.dataset)]
        )
        self.excluded_hash = excluded_ids_hash(protected)
        self.dropped = self._copies(candidates, protected)
        copies = {pair.query for pair in self.dropped}
        pool = [ref for ref in candidates if self.paths[ref] not in copies]
        groups = self._groups()
        train, val = split_validation(
            pool, [groups[ref] for ref in pool], self.val_fraction, self.split_seed
        )
        order = np.random.default_rng([self.split_seed, 7]).permutation(len(train))
        return {
            "train": fraction_prefix([train[i] for i in order], self.fraction),
            "val": val,
            "test": self.test_ids(),
        }

    def _candidates(self, splits: dict) -> tuple[list[str], bool]:
        if not self.pool_roots:
            return localization_pool(self.dataset, splits, self.fold)
        refs: list[str] = []
        self.pool_datasets = []
        for k, root in enumerate(self.pool_roots):
            prefix = f"pool{k}:{root.name}/"
            dataset, _ = self._register(root, prefix)
            self.pool_datasets.append((prefix, dataset))
            refs += [prefix + s.image_id for s in dataset.centred()]
        return refs, False

    def _groups(self) -> dict[str, str]:
        groups = {s.image_id: s.group_id for s in self.dataset.samples}
        for prefix, dataset in getattr(self, "pool_datasets", []):
            groups.update({prefix + s.image_id: prefix + s.group_id for s in dataset.samples})
        return groups

    def _copies(self, candidates: list[str], protected: list[str]) -> list[DuplicatePair]:
        """Candidate photographs that show a protected image (found by content)."""
        return find_duplicates(
            [self.paths[ref] for ref in candidates],
            [self.paths[i] for i in protected],
            cache_dir=self.cache_dir,
        )

    def encoder_facts(self) -> dict:
        """What a localizer's ``encoder.pt`` records about its inputs beyond the preprocessing
        (nothing for whole photographs; the crop-scale localizer adds its crops)."""
        return {}

    def use_test_fold(self, fold: int) -> None:
        """Point the test set at another fold (a shared localizer is tested on every fold)."""
        self.selection["test"] = self.test_ids(fold)

    def write_dropped(self, path: Path) -> Path:
        """``pool_dropped.csv``: every pool photograph left out as a copy of a protected image."""
        with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["pool_image", "protected_image", "score"])
            for pair in self.dropped:
                writer.writerow([pair.query, pair.reference, f"{pair.score:.4f}"])
        return path
