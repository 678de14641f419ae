"""Segmentation on disc-centred crops (``data.roi``): the crop cache and the DataModule.

Training and validation crops are cut around each image's *true* centre; the test crops around
the centres a localizer *predicts*, which the DataModule is given (:meth:`set_test_centres`): the
data layer knows files, not models, so the entry point runs the localizer and hands the centres
over. ``roi.test_centres=true`` cuts test crops around the true centres instead (an oracle bound,
never the headline).

Crops are preprocessed like whole photographs (gray, min-max, CLAHE, gamma, area resize; see
:func:`locseg.data.roi.crop_input`) and cached on disk, keyed by the source cache (itself keyed by
the files' content), the boxes and the parameters. Training crops carry a jitter margin: they are
``S + 2m`` px for an ``S``-px input, and every draw takes a random ``S``-px window of them, which
moves the disc by up to ``jitter * side`` native px off the crop's centre.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from locseg.data.augment import apply_augmentation
from locseg.data.datamodules import FundusSamples, SegmentationDataModule
from locseg.data.dataset import DatasetError, FundusDataset, load_sample
from locseg.data.frames import from_frame
from locseg.data.preprocess import (
    PreprocessConfig,
    PreprocessedSet,
    _cache_problem,
    _file_record,
)
from locseg.data.roi import (
    Box,
    RoiSpec,
    box_around,
    check_centre_source,
    crop_config,
    crop_input,
    crop_mask,
    margin_px,
)
from locseg.io import atomic_path, write_json_atomic

CROP_CACHE_VERSION = 1
# The entry of a Lightning checkpoint that carries the region a segmenter was trained on; the
# DataModule's state_dict lands in every checkpoint Lightning writes while it trains.
CHECKPOINT_ENTRY = "locseg_roi"
# roi keys read by the crop-scale localizer (locseg.data.roi_localization); a segmenter ignores
# them, so one roi node serves the localize and the segment jobs of a sweep.
LOCALIZER_KEYS = ("localizer_crops", "localizer_jitter", "localizer_diameter_px")


# --------------------------------------------------------------------------- the crop cache


@dataclass
class CropSet:
    """Preprocessed crops, row i = ``ids[i]``, cut from ``boxes[i]`` of the native photograph."""

    ids: list[str]
    images: np.ndarray  # uint8 (N, C, C)
    masks: np.ndarray  # uint8 (N, C, C) in {0, 1}; zeros where the image has no mask
    boxes: np.ndarray  # int64 (N, 3): x0, y0, side in native px
    config: PreprocessConfig  # image_size = C, the crop's size in px
    path: Path

    def box(self, row: int) -> Box:
        x0, y0, side = (int(v) for v in self.boxes[row])
        return Box(x0, y0, side)

    def index_of(self) -> dict[str, int]:
        return {image_id: i for i, image_id in enumerate(self.ids)}


def crop_cache_key(
    source: PreprocessedSet,
    ids: Sequence[str],
    boxes: Mapping[str, Box],
    config: PreprocessConfig,
    mask_threshold: int | None,
) -> str:
    """Source content (via its cache's content key), the boxes and the parameters."""
    header = {
        "v": CROP_CACHE_VERSION,
        "source": source.path.name,
        "config": config.as_dict(),
        "mask_threshold": mask_threshold,
        "boxes": [[i, *boxes[i].as_list()] for i in ids],
    }
    return hashlib.sha256(json.dumps(header, sort_keys=True).encode()).hexdigest()[:16]


def build_crops(
    dataset: FundusDataset,
    source: PreprocessedSet,
    ids: Sequence[str],
    boxes: Mapping[str, Box],
    config: PreprocessConfig,
    cache_dir: str | Path,
    mask_threshold: int | None = None,
) -> CropSet:
    """Cut, preprocess and cache one crop per id (``config.image_size`` px); reuse a cached set."""
    ids = list(ids)
    missing = [i for i in ids if i not in boxes]
    if missing:
        raise DatasetError(f"{dataset.root}: no crop box for image(s) {missing[:5]}")
    key = crop_cache_key(source, ids, boxes, config, mask_threshold)
    folder = Path(cache_dir) / f"roi-{dataset.root.name}-{key}"
    if _cache_problem(folder) is not None:
        _write_crops(dataset, ids, boxes, config, folder, mask_threshold)
    meta = json.loads((folder / "meta.json").read_text())
    return CropSet(
        ids=meta["ids"],
        images=np.load(folder / "images.npy"),
        masks=np.load(folder / "masks.npy"),
        boxes=np.asarray(meta["boxes"], dtype=np.int64).reshape(-1, 3),
        config=config,
        path=folder,
    )


def _write_crops(
    dataset: FundusDataset,
    ids: list[str],
    boxes: Mapping[str, Box],
    config: PreprocessConfig,
    folder: Path,
    mask_threshold: int | None,
) -> None:
    size, by_id = config.image_size, dataset.by_id()
    images = np.zeros((len(ids), size, size), np.uint8)
    masks = np.zeros((len(ids), size, size), np.uint8)
    for i, image_id in enumerate(ids):
        loaded = load_sample(by_id[image_id], mask_threshold)
        images[i] = crop_input(loaded.image, boxes[image_id], config)
        if loaded.mask is not None:
            masks[i] = crop_mask(loaded.mask, boxes[image_id], size)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "meta.json").unlink(missing_ok=True)  # invalid until rewritten last
    records = {}
    for name, array in (("images", images), ("masks", masks)):
        with atomic_path(folder / f"{name}.npy") as tmp:
            with tmp.open("wb") as handle:
                np.save(handle, array)
            records[name] = _file_record(tmp)
    meta = {
        "ids": ids,
        "boxes": [boxes[i].as_list() for i in ids],
        "config": config.as_dict(),
        "files": records,
    }
    write_json_atomic(folder / "meta.json", meta)


def true_centres(data: PreprocessedSet, ids: Sequence[str]) -> dict[str, tuple[float, float]]:
    """Labelled centres in native px (pixel centres on integers).

    The cache stores them normalised in each image's frame (the field-of-view square with
    ``crop_fov``); the whole-photograph frame keeps the plain ``u * W - 0.5``.
    """
    index_of = data.index_of()
    out = {}
    for image_id in ids:
        row = index_of[image_id]
        frame = data.frame(row)
        if frame.is_identity(data.native_sizes[row]):
            x, y = data.centers[row] * data.native_sizes[row] - 0.5
        else:
            x, y = from_frame(data.centers[row], frame)
        out[image_id] = (float(x), float(y))
    return out


# --------------------------------------------------------------------------- samples


class CropSamples(FundusSamples):
    """Crops as batches: the keys of :class:`FundusSamples` plus ``box`` (x0, y0, side native px).

    With ``window`` set (training), each draw takes a random ``window`` x ``window`` part of the
    larger cached crop; otherwise the crop is used whole. ``center`` is the true centre in the
    crop, normalised; ``index`` is the image's row in the source cache.
    """

    def __init__(
        self,
        crops: CropSet,
        source: PreprocessedSet,
        augmentation=None,
        window: int | None = None,
    ):
        super().__init__([], augmentation)
        self.crops, self.source, self.window = crops, source, window
        self.rows = [source.index_of()[i] for i in crops.ids]
        self.centres = true_centres(source, crops.ids)
        self.rng = np.random.default_rng(0)

    def __len__(self) -> int:
        return len(self.crops.ids)

    def reseed(self, seed: int) -> None:
        super().reseed(seed)
        self.rng = np.random.default_rng([int(seed), 11])

    def offset(self, item: int, spare: int) -> np.ndarray:
        """Where item's window starts in its cached crop: (x, y) crop px in [0, spare]."""
        return self.rng.integers(0, spare + 1, 2)

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        crops, row = self.crops, self.rows[item]
        image, mask = crops.images[item], crops.masks[item]
        full, box = crops.config.image_size, crops.box(item)
        size, offset = full, np.zeros(2, dtype=np.int64)
        if self.window is not None and self.window < full:
            size = self.window
            offset = self.offset(item, full - size)
            ox, oy = (int(v) for v in offset)
            image, mask = (
                image[oy : oy + size, ox : ox + size],
                mask[oy : oy + size, ox : ox + size],
            )
        centre = box.to_crop(np.asarray(self.centres[crops.ids[item]]), full) - offset
        scale = box.side / full  # native px per crop px
        window_box = [box.x0 + offset[0] * scale, box.y0 + offset[1] * scale, size * scale]
        image, mask, centre = apply_augmentation(
            self.augmentation,
            np.ascontiguousarray(image),
            np.ascontiguousarray(mask),
            centre.astype(np.float32),
        )
        source = self.source
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image)).unsqueeze(0).float().div_(255.0),
            "mask": torch.from_numpy(np.ascontiguousarray(mask)).unsqueeze(0).float(),
            "center": torch.from_numpy((np.asarray(centre) + 0.5) / size).float(),
            "native_size": torch.from_numpy(np.asarray(source.native_sizes[row])),
            "radius": torch.tensor(source.radii[row]),
            "index": torch.tensor(row),
            "box": torch.tensor(window_box, dtype=torch.float32),
        }


# --------------------------------------------------------------------------- the DataModule


class RoiSegmentationDataModule(SegmentationDataModule):
    """:class:`SegmentationDataModule` on disc-centred crops of ``image_size`` px.

    ``roi``: the :class:`~locseg.data.roi.RoiSpec` fields (``side_diameters``, ``side_px``,
    ``jitter``), ``test_centres`` (``predicted`` | ``true``) and ``localizer_ckpt`` (where the
    entry point finds the localizer that predicts the test centres; kept here, not used here).
    The crop side in native px is fixed from the *training* masks of the fold and fraction.
    """

    def __init__(self, *args, roi: Mapping | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        options = dict(roi or {})
        self.centre_source = check_centre_source(options.pop("test_centres", "predicted"))
        self.localizer_ckpt = options.pop("localizer_ckpt", None)
        for key in LOCALIZER_KEYS:  # the crop-scale localizer's options, not the segmenter's
            options.pop(key, None)
        try:
            self.spec = RoiSpec(**options)
        except TypeError as error:
            raise DatasetError(
                f"data.roi: {error}; valid keys are side_diameters, side_px, jitter, "
                f"test_centres, localizer_ckpt, {', '.join(LOCALIZER_KEYS)}"
            ) from None
        self.side_px: int | None = None
        self.median_diameter_px: float | None = None
        self.crops: dict[str, CropSet] = {}
        self.test_centres: dict[str, tuple[float, float]] | None = None

    # ------------------------------------------------------------------ set-up

    def _load(self) -> None:
        super()._load()
        diameters = 2.0 * self.data.radii[self.rows("train")]
        finite = diameters[np.isfinite(diameters)]
        self.median_diameter_px = float(np.median(finite)) if finite.size else None
        self.side_px = self.spec.side_for(finite.tolist())
        self.crops = {}

    @property
    def crop_size(self) -> int:
        return self.preprocess_config.image_size

    def _train_crop_size(self) -> int:
        return self.crop_size + 2 * margin_px(self.spec, self.crop_size)

    def boxes_around(self, centres: Mapping[str, Sequence[float]], side: int) -> dict[str, Box]:
        return {image_id: box_around(xy, side) for image_id, xy in centres.items()}

    def _part_crops(self, part: str) -> CropSet:
        """The cached crops of train / val / test, built on first use."""
        if part in self.crops:
            return self.crops[part]
        ids = self.selection[part]
        size, side = self.crop_size, self.side_px
        if part == "train":
            size = self._train_crop_size()
            side = max(2, round(self.side_px * size / self.crop_size))
        centres = self._test_centres() if part == "test" else true_centres(self.data, ids)
        self.crops[part] = build_crops(
            self.dataset,
            self.data,
            ids,
            self.boxes_around(centres, side),
            crop_config(self.preprocess_config, size),
            self.cache_dir,
            self.mask_threshold,
        )
        return self.crops[part]

    # ------------------------------------------------------------------ test centres

    def set_test_centres(self, centres: Mapping[str, Sequence[float]]) -> None:
        """Centres (native px) to crop the test images around, e.g. a localizer's predictions."""
        ids = self.selection["test"]
        missing = [i for i in ids if i not in centres]
        if missing:
            raise DatasetError(f"{self.root}: no test centre given for image(s) {missing[:5]}")
        self.test_centres = {i: (float(centres[i][0]), float(centres[i][1])) for i in ids}
        self.crops.pop("test", None)

    def _test_centres(self) -> dict[str, tuple[float, float]]:
        ids = self.selection["test"]
        if self.centre_source == "true":
            return true_centres(self.data, ids)
        if self.test_centres is None:
            raise DatasetError(
                f"{self.root}: data.roi.test_centres=predicted but no centres were given; call "
                "set_test_centres({id: (x, y)}) with the localizer's predictions before testing "
                "(locseg.inference.predict_centres makes them), or set roi.test_centres=true "
                "for the oracle bound"
            )
        return self.test_centres

    def val_crops(self) -> CropSet:
        """The validation crops (around the true centres): where post-processing is chosen."""
        return self._part_crops("val")

    def test_crops(self) -> CropSet:
        """The test crops (around the given or true centres), as the native metrics need them."""
        return self._part_crops("test")

    def centre_errors(self) -> dict[str, float]:
        """Per test image: distance in native px from the crop's centre to the true centre."""
        used, truth = self._test_centres(), true_centres(self.data, self.selection["test"])
        return {i: math.dist(used[i], truth[i]) for i in self.selection["test"]}

    # ------------------------------------------------------------------ facts for the run

    def roi_facts(self) -> dict:
        """What a model trained here must be given again: stored in checkpoints and metrics."""
        return {
            **self.spec.as_dict(),
            "side_px": self.side_px,
            "median_diameter_px": self.median_diameter_px,
            "crop_size": self.crop_size,
            "test_centres": self.centre_source,
        }

    def identity(self) -> dict[str, str]:
        return {**super().identity(), "roi": json.dumps(self.roi_facts(), sort_keys=True)}

    def state_dict(self) -> dict:
        """Lightning stores this in every checkpoint: inference reads the region from there."""
        return {CHECKPOINT_ENTRY: self.roi_facts()} if self.side_px is not None else {}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restoring a checkpoint of this very run: the region must be the one computed here."""
        stored = (state_dict or {}).get(CHECKPOINT_ENTRY)
        if stored and self.side_px is not None and int(stored["side_px"]) != self.side_px:
            raise DatasetError(
                f"checkpoint crop side {stored['side_px']} px differs from this run's "
                f"{self.side_px} px (data.roi or the training masks changed); retrain"
            )

    # ------------------------------------------------------------------ loaders

    def samples(self, part: str, augmentation, train: bool) -> CropSamples:
        """Crops instead of whole photographs; a random window of each in training (jitter)."""
        window = self.crop_size if train else None
        return CropSamples(self._part_crops(part), self.data, augmentation, window=window)
