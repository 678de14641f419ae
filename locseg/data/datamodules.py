"""The DataModule family: one base (dataset, cache, folds, fractions) and a subclass per task.

Both tasks read the same preprocessed cache and the same persisted splits, so the test fold of
``data.fold`` is identical for the localizer, every fraction and every arm (a paired design).
Batches are dicts of tensors; the modules never see a file name (``index`` maps back to an id).
"""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from locseg.data.augment import apply_augmentation, build_augmentation, seed_augmentation
from locseg.data.dataset import DatasetError, FundusDataset, load_dataset
from locseg.data.preprocess import (
    PreprocessConfig,
    PreprocessedSet,
    default_cache_dir,
    preprocess_dataset,
)
from locseg.data.splits import (
    check_fold,
    dataset_splits,
    excluded_ids_hash,
    fraction_prefix,
    localization_pool,
    split_validation,
    splits_digest,
)


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


class FundusSamples(Dataset):
    """Rows of a preprocessed set as dicts of tensors, augmented on the fly when asked."""

    def __init__(self, data: PreprocessedSet, rows: list[int], augmentation=None):
        self.data, self.rows, self.augmentation = data, rows, augmentation
        self.size = data.config.image_size

    def __len__(self) -> int:
        return len(self.rows)

    def reseed(self, seed: int) -> None:
        seed_augmentation(self.augmentation, seed)

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        row = self.rows[item]
        image = np.array(self.data.images[row])
        mask = np.array(self.data.masks[row])
        center_px = self.data.centers[row] * self.size - 0.5
        image, mask, center_px = apply_augmentation(self.augmentation, image, mask, center_px)
        return {
            "image": torch.from_numpy(image).unsqueeze(0).float().div_(255.0),
            "mask": torch.from_numpy(np.ascontiguousarray(mask)).unsqueeze(0).float(),
            "center": torch.from_numpy((center_px + 0.5) / self.size).float(),
            "native_size": torch.from_numpy(self.data.native_sizes[row]),
            "radius": torch.tensor(self.data.radii[row]),
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
        self.dataset: FundusDataset | None = None
        self.data: PreprocessedSet | None = None
        self.selection: dict[str, list[str]] = {}
        self.splits: dict = {}

    # ------------------------------------------------------------------ set-up

    def prepare_data(self) -> None:
        """Build the cache and the splits file once (rank 0 only under DDP)."""
        self._load()

    def setup(self, stage: str | None = None) -> None:
        if self.data is None:
            self._load()

    def _load(self) -> None:
        self.dataset = load_dataset(self.root, self.mask_threshold)
        self.data = preprocess_dataset(
            self.dataset, self.preprocess_config, self.cache_dir, self.mask_threshold
        )
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

    @abstractmethod
    def select(self, splits: dict) -> dict[str, list[str]]:
        """Image ids of the train, val and test sets for this task, fold and fraction."""

    # ------------------------------------------------------------------ facts for the run

    def rows(self, part: str) -> list[int]:
        index_of = self.data.index_of()
        return [index_of[i] for i in self.selection[part]]

    def id_of(self, row: int) -> str:
        return self.data.ids[row]

    def counts(self) -> dict[str, int]:
        return {f"n_{part}": len(ids) for part, ids in self.selection.items()}

    def mean_train_center(self) -> tuple[float, float]:
        """Mean normalised training centre: the constant-prediction baseline for localization."""
        u, v = self.data.centers[self.rows("train")].mean(axis=0)
        return float(u), float(v)

    def signature(self) -> dict:
        """What a model trained on this data must be given again at inference."""
        return self.preprocess_config.as_dict()

    def identity(self) -> dict[str, str]:
        """What a result depends on beyond the config: the folds and the cached pixels."""
        return {"splits": splits_digest(self.splits), "cache": self.data.path.name}

    def fold_test_hash(self) -> str:
        """Identity of this fold's test images, which a localizer for it must never have seen."""
        return excluded_ids_hash(self.splits["folds"][self.fold]["test"])

    def masked_hash(self) -> str:
        """Identity of every masked image: each is a test image in some fold."""
        return excluded_ids_hash([s.image_id for s in self.dataset.masked()])

    # ------------------------------------------------------------------ loaders

    def _loader(self, part: str, train: bool) -> DataLoader:
        augmentation = build_augmentation(**self.augment_options) if train else None
        samples = FundusSamples(self.data, self.rows(part), augmentation)
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
    """Image -> mask over the masked pool: a fraction of the fold's training images."""

    task = "segment"

    def select(self, splits: dict) -> dict[str, list[str]]:
        entry = splits["folds"][self.fold]
        return {
            "train": fraction_prefix(entry["train"], self.fraction),
            "val": list(entry["val"]),
            "test": list(entry["test"]),
        }


class LocalizationDataModule(FundusDataModule):
    """Image -> centre over the localization pool, tested on the fold's segmentation test set."""

    task = "localize"

    def select(self, splits: dict) -> dict[str, list[str]]:
        pool, self.per_fold = localization_pool(self.dataset, splits, self.fold)
        self.excluded_hash = self.fold_test_hash() if self.per_fold else self.masked_hash()
        groups = {s.image_id: s.group_id for s in self.dataset.samples}
        train, val = split_validation(
            pool, [groups[i] for i in pool], self.val_fraction, self.split_seed
        )
        order = np.random.default_rng([self.split_seed, 7]).permutation(len(train))
        return {
            "train": fraction_prefix([train[i] for i in order], self.fraction),
            "val": val,
            "test": list(splits["folds"][self.fold]["test"]),
        }
