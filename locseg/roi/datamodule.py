"""Segmentation on disc-centred crops (``data.roi``): the crop cache and the DataModule.

Training and validation crops are cut around each image's *true* centre; the test crops around
the centres a localizer *predicts*, which the DataModule is given (:meth:`set_test_centres`): the
data layer knows files, not models, so the entry point runs the localizer and hands the centres
over. ``roi.test_centres=true`` cuts test crops around the true centres instead (an oracle bound,
never the headline).

Every crop of every split goes through one pipeline: the box's native pixels are cut from the
photograph and preprocessed on their own (gray, min-max, CLAHE, gamma, area resize; see
:func:`locseg.roi.geometry.crop_input`), never a larger area, so a training window and a test crop
at the same centre are the same pixels. Validation and test crops are cached on disk
(:func:`build_crops`), keyed by the source cache (itself keyed by the files' content), the boxes
and the parameters. Training draws move the box: every draw takes a ``side`` px window at a random
integer offset inside a box of ``side + 2m`` native px around the true centre (``m`` =
``floor(jitter * side)``), whose native gray pixels and mask are cached (:func:`build_native`), and
preprocesses that window alone (about 0.1 ms per 64-px window).
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
    resize_mask,
)
from locseg.io import atomic_path, write_json_atomic
from locseg.roi.geometry import (
    Box,
    RoiSpec,
    box_around,
    check_centre_source,
    crop_input,
    crop_mask,
    cut,
    gray,
    jitter_px,
    preprocess_piece,
    window_in,
)

CROP_CACHE_VERSION = 1
# 1: native gray pixels and masks of the box around each training centre (windows cut at draw time)
NATIVE_CACHE_VERSION = 1
# How training crops are made; part of every crop job's identity, so a result trained on crops
# made another way is rerun (windows-v1: each window preprocessed on its own pixels, as test
# crops are; before it, windows were cut from a larger crop preprocessed as a whole).
CROP_PIPELINE = "windows-v1"
# The entry of a Lightning checkpoint that carries the region a segmenter was trained on; the
# DataModule's state_dict lands in every checkpoint Lightning writes while it trains.
CHECKPOINT_ENTRY = "locseg_roi"
# roi keys read by the crop-scale localizer (locseg.roi.localization); a segmenter ignores
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
    meta = {"ids": ids, "boxes": [boxes[i].as_list() for i in ids], "config": config.as_dict()}
    _save_arrays(folder, {"images": images, "masks": masks}, meta)


def _save_arrays(folder: Path, arrays: Mapping[str, np.ndarray], meta: dict) -> None:
    """Write ``NAME.npy`` per array, then ``meta.json`` (with their records) last."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "meta.json").unlink(missing_ok=True)  # invalid until rewritten last
    records = {}
    for name, array in arrays.items():
        with atomic_path(folder / f"{name}.npy") as tmp:
            with tmp.open("wb") as handle:
                np.save(handle, array)
            records[name] = _file_record(tmp)
    write_json_atomic(folder / "meta.json", {**meta, "files": records})


# --------------------------------------------------------------------------- training windows


@dataclass
class NativeSet:
    """Native pixels around each training centre; windows are cut and preprocessed per draw.

    Row i = ``ids[i]``: the uint8 luma (:func:`locseg.roi.geometry.gray`) and {0, 1} mask of
    ``boxes[i]`` (``side + 2m`` native px, black / 0 beyond the photograph). A window at integer
    offset (x, y) in ``[0, spare]`` is the ``side`` px box there, preprocessed on its own pixels
    (:func:`locseg.roi.geometry.preprocess_piece`): exactly
    :func:`locseg.roi.geometry.crop_input` of the photograph at that box, as validation, test,
    evaluate and predict crops are made.
    """

    ids: list[str]
    gray: np.ndarray  # uint8 (N, F, F) native luma, memory-mapped
    masks: np.ndarray  # uint8 (N, F, F) native {0, 1}; zeros where the image has no mask
    boxes: np.ndarray  # int64 (N, 3): x0, y0, F in native px
    side: int  # the window's side in native px
    config: PreprocessConfig  # image_size = the window's size in px (the network input)
    path: Path

    @property
    def spare(self) -> int:
        """How far (native px) a window can move in x and y: ``F - side`` = ``2m``."""
        return int(self.gray.shape[1]) - self.side

    def box(self, row: int) -> Box:
        x0, y0, side = (int(v) for v in self.boxes[row])
        return Box(x0, y0, side)

    def window(self, row: int, offset: Sequence[int]) -> tuple[np.ndarray, np.ndarray, Box]:
        """Network input, mask and native box of the window at ``offset`` (x, y) native px."""
        outer = self.box(row)
        box = window_in(outer, offset, self.side)
        ox, oy, side = box.x0 - outer.x0, box.y0 - outer.y0, self.side
        image = preprocess_piece(self.gray[row, oy : oy + side, ox : ox + side], self.config)
        mask = resize_mask(self.masks[row, oy : oy + side, ox : ox + side], self.config.image_size)
        return image, mask, box


def build_native(
    dataset: FundusDataset,
    source: PreprocessedSet,
    ids: Sequence[str],
    boxes: Mapping[str, Box],
    side: int,
    config: PreprocessConfig,
    cache_dir: str | Path,
    mask_threshold: int | None = None,
) -> NativeSet:
    """Cut and cache the native luma and mask of each id's box (all of one size), for windows of
    ``side`` native px shown at ``config.image_size`` px; reuse a cached set."""
    ids = list(ids)
    missing = [i for i in ids if i not in boxes]
    if missing:
        raise DatasetError(f"{dataset.root}: no crop box for image(s) {missing[:5]}")
    sizes = {boxes[i].side for i in ids}
    if len(sizes) > 1 or (sizes and min(sizes) < side):
        raise DatasetError(f"native boxes of sides {sorted(sizes)} for {side}-px windows")
    header = {
        "v": NATIVE_CACHE_VERSION,
        "source": source.path.name,
        "mask_threshold": mask_threshold,
        "boxes": [[i, *boxes[i].as_list()] for i in ids],
    }
    key = hashlib.sha256(json.dumps(header, sort_keys=True).encode()).hexdigest()[:16]
    folder = Path(cache_dir) / f"roi-native-{dataset.root.name}-{key}"
    if _cache_problem(folder) is not None:
        full, by_id = (sizes.pop() if sizes else side), dataset.by_id()
        lumas = np.zeros((len(ids), full, full), np.uint8)
        masks = np.zeros((len(ids), full, full), np.uint8)
        for i, image_id in enumerate(ids):
            loaded = load_sample(by_id[image_id], mask_threshold)
            lumas[i] = cut(gray(loaded.image), boxes[image_id])
            if loaded.mask is not None:
                masks[i] = cut(np.asarray(loaded.mask, dtype=np.uint8), boxes[image_id])
        meta = {"ids": ids, "boxes": [boxes[i].as_list() for i in ids]}
        _save_arrays(folder, {"gray": lumas, "masks": masks}, meta)
    meta = json.loads((folder / "meta.json").read_text())
    return NativeSet(
        ids=meta["ids"],
        gray=np.load(folder / "gray.npy", mmap_mode="r"),
        masks=np.load(folder / "masks.npy", mmap_mode="r"),
        boxes=np.asarray(meta["boxes"], dtype=np.int64).reshape(-1, 3),
        side=int(side),
        config=config,
        path=folder,
    )


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

    From a :class:`NativeSet` (training) each draw preprocesses a ``side`` px window at a random
    offset (:meth:`offset`); from a :class:`CropSet` each crop is used whole. Either way the input
    is :func:`locseg.roi.geometry.crop_input` of the photograph at ``box``. ``center`` is the true
    centre in the input, normalised; ``index`` is the image's row in the source cache.
    """

    def __init__(
        self,
        crops: CropSet | NativeSet,
        source: PreprocessedSet,
        augmentation=None,
    ):
        super().__init__([], augmentation)
        self.crops, self.source = crops, source
        self.rows = [source.index_of()[i] for i in crops.ids]
        self.centres = true_centres(source, crops.ids)
        self.rng = np.random.default_rng(0)

    def __len__(self) -> int:
        return len(self.crops.ids)

    def reseed(self, seed: int) -> None:
        super().reseed(seed)
        self.rng = np.random.default_rng([int(seed), 11])

    def offset(self, item: int, spare: int) -> np.ndarray:
        """Where item's window starts in its native box: (x, y) native px in [0, spare]."""
        return self.rng.integers(0, spare + 1, 2)

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        crops, row = self.crops, self.rows[item]
        size = crops.config.image_size
        if isinstance(crops, NativeSet):
            image, mask, box = crops.window(item, self.offset(item, crops.spare))
        else:
            image, mask, box = crops.images[item], crops.masks[item], crops.box(item)
        centre = box.to_crop(np.asarray(self.centres[crops.ids[item]]), size)
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
            "box": torch.tensor(box.as_list(), dtype=torch.float32),
        }


# --------------------------------------------------------------------------- the DataModule


class RoiSegmentationDataModule(SegmentationDataModule):
    """:class:`SegmentationDataModule` on disc-centred crops of ``image_size`` px.

    ``roi``: the :class:`~locseg.roi.geometry.RoiSpec` fields (``side_diameters``, ``side_px``,
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
        self.crops: dict[str, CropSet | NativeSet] = {}
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

    def boxes_around(self, centres: Mapping[str, Sequence[float]], side: int) -> dict[str, Box]:
        return {image_id: box_around(xy, side) for image_id, xy in centres.items()}

    def _part_crops(self, part: str) -> CropSet:
        """The cached crops of train / val / test (``side_px`` boxes), built on first use."""
        if part in self.crops:
            return self.crops[part]
        ids = self.selection[part]
        centres = self._test_centres() if part == "test" else true_centres(self.data, ids)
        self.crops[part] = build_crops(
            self.dataset,
            self.data,
            ids,
            self.boxes_around(centres, self.side_px),
            self.preprocess_config,
            self.cache_dir,
            self.mask_threshold,
        )
        return self.crops[part]

    def _train_windows(self) -> NativeSet:
        """Native pixels around the training centres; each draw cuts a jittered window."""
        if "train_windows" not in self.crops:
            ids = self.selection["train"]
            outer = self.side_px + 2 * jitter_px(self.spec, self.side_px)
            self.crops["train_windows"] = build_native(
                self.dataset,
                self.data,
                ids,
                self.boxes_around(true_centres(self.data, ids), outer),
                self.side_px,
                self.preprocess_config,
                self.cache_dir,
                self.mask_threshold,
            )
        return self.crops["train_windows"]

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
                "(locseg.roi.centres.roi_test_centres makes them), or set roi.test_centres=true "
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
        roi = json.dumps(self.roi_facts(), sort_keys=True)
        return {**super().identity(), "roi": roi, "crop_pipeline": CROP_PIPELINE}

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
        """Crops instead of whole photographs; a randomly moved window of each in training."""
        crops = self._train_windows() if train and part == "train" else self._part_crops(part)
        return CropSamples(crops, self.data, augmentation)
