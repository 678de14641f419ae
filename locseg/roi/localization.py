"""A localizer trained on disc-centred crops at the segmenter's scale (``roi.localizer_crops``).

With ``roi=disc`` the segmenter sees crops of ``side_diameters`` disc diameters (the disc about
half the input wide), while the whole-photograph localizer sees the disc 8-10 px wide: its encoder
reaches the segmenter at the wrong scale. This DataModule trains a second localizer on windows of
the segmenter's crop size whose only product is that encoder; the whole-photograph localizer still
places the test crops (a crop localizer cannot search a photograph, so it is never tested on one).

The pool and its leakage guard are :class:`LocalizationDataModule`'s. Each training draw is a
``side`` px window at a random integer offset inside a box of ``side + 2m`` native px around the
true centre (``m = floor(localizer_jitter * side)``; the box's native pixels are cached by
:func:`locseg.roi.datamodule.build_native`), preprocessed on its own pixels like every other
crop (:func:`locseg.roi.geometry.crop_input`), so the disc lands anywhere in the central part of the
window; validation windows sit at fixed, seeded offsets. Batches carry ``frame_size`` = the
window's side in native px, so ``val/dist_px`` is in native px of the photograph and the
baselines are those of the window (its mean training centre, its centre).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from locseg.data.datamodules import FundusSamples, LocalizationDataModule
from locseg.data.dataset import DatasetError, FundusDataset
from locseg.data.preprocess import PreprocessedSet
from locseg.roi.datamodule import (
    CROP_PIPELINE,
    LOCALIZER_KEYS,
    CropSamples,
    NativeSet,
    build_native,
    true_centres,
)
from locseg.roi.geometry import RoiError, RoiSpec, box_around, jitter_px

# The entry of a Lightning checkpoint (the DataModule's state_dict) that marks a crop localizer.
LOCALIZER_ENTRY = "locseg_roi_localizer"
DEFAULT_JITTER = 0.25
# The segmenter's roi keys this module reads (side) or accepts and ignores (the rest).
SEGMENTER_KEYS = ("side_diameters", "side_px", "jitter", "test_centres", "localizer_ckpt")
TEST_SKIPPED = (
    "crop-scale localizer (roi.localizer_crops=true): its encoder is the product; it never "
    "searches a whole photograph, so it is not tested on data.root's folds (a whole-photograph "
    "localizer places the test crops: roi.localizer_ckpt)"
)


class WindowSamples(CropSamples):
    """Windows around the disc for the localizer: :class:`CropSamples` plus ``frame_size``.

    ``offsets`` (N, 2) native px fixes each item's window (validation); without it every draw is
    random.
    """

    def __init__(
        self,
        crops: NativeSet,
        source: PreprocessedSet,
        offsets: np.ndarray | None = None,
        augmentation=None,
    ):
        super().__init__(crops, source, augmentation)
        self.offsets = offsets

    def offset(self, item: int, spare: int) -> np.ndarray:
        return super().offset(item, spare) if self.offsets is None else self.offsets[item]

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        out = super().__getitem__(item)
        side = out["box"][2]  # the window's side in native px: the frame the centre lives in
        out["frame_size"] = torch.stack([side, side])
        return out


class JoinedSamples(FundusSamples):
    """Several sample sets (one per source folder) served as one."""

    def __init__(self, parts: Sequence[FundusSamples]):
        super().__init__([])
        self.parts = list(parts)
        self.starts = np.cumsum([0] + [len(p) for p in self.parts])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def reseed(self, seed: int) -> None:
        for k, part in enumerate(self.parts):
            part.reseed(int(seed) + k)

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        k = int(np.searchsorted(self.starts, item, side="right")) - 1
        return self.parts[k][item - int(self.starts[k])]


class RoiLocalizationDataModule(LocalizationDataModule):
    """:class:`LocalizationDataModule` on windows around the disc, at the segmenter's scale.

    ``roi``: the segmenter's ``side_diameters`` / ``side_px`` (the crop side), plus
    ``localizer_jitter`` (how far the centre moves, a fraction of the side) and
    ``localizer_diameter_px`` (the disc diameter in native px; default: the median over the
    training images with masks). The other roi keys are the segmenter's and are ignored here.
    """

    test_skipped = TEST_SKIPPED

    def __init__(self, *args, roi: Mapping | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        options = dict(roi or {})
        unknown = sorted(set(options) - set(SEGMENTER_KEYS) - set(LOCALIZER_KEYS))
        if unknown:
            raise DatasetError(
                f"data.roi: unknown key(s) {unknown}; valid keys are "
                f"{', '.join(SEGMENTER_KEYS + LOCALIZER_KEYS)}"
            )
        if options.get("side_diameters") is None and options.get("side_px") is None:
            raise DatasetError(
                "roi.localizer_crops=true sizes its crops as the segmenter's (roi.side_diameters "
                "or roi.side_px) and neither is set: select roi=disc (experiment=real does)"
            )
        jitter = options.get("localizer_jitter")
        jitter = DEFAULT_JITTER if jitter is None else float(jitter)
        try:
            self.spec = RoiSpec(options.get("side_diameters"), options.get("side_px"), jitter)
        except RoiError as error:
            raise DatasetError(
                f"{error} (read as roi.localizer_jitter={jitter}: it must lie in [0, 0.5))"
            ) from None
        diameter = options.get("localizer_diameter_px")
        if diameter is not None and not float(diameter) > 0:
            raise DatasetError(
                f"roi.localizer_diameter_px={diameter} must be a positive disc diameter in "
                "native px (or null: the median of the training masks)"
            )
        self.diameter_option = None if diameter is None else float(diameter)
        self.sources: dict[str, tuple[FundusDataset, PreprocessedSet]] = {}
        self.diameter_px: float | None = None
        self.side_px: int | None = None
        self.crops: dict[str, list[tuple[NativeSet, PreprocessedSet]]] = {}

    # ------------------------------------------------------------------ set-up

    def _register(self, root, prefix: str) -> tuple[FundusDataset, PreprocessedSet]:
        dataset, data = super()._register(root, prefix)
        self.sources[prefix] = (dataset, data)  # build_crops reads the files of each folder
        return dataset, data

    def _load(self) -> None:
        super()._load()
        self.diameter_px = self.disc_diameter()
        self.side_px = self.spec.side_for([self.diameter_px])
        self.crops = {}

    def disc_diameter(self) -> float:
        """``roi.localizer_diameter_px``, else the median diameter of the training masks."""
        if self.diameter_option is not None:
            return self.diameter_option
        radii = [float(data.radii[row]) for data, row in self.items("train")]
        known = [2.0 * r for r in radii if math.isfinite(r) and r > 0]
        if not known:
            raise DatasetError(
                f"{', '.join(str(p) for p in self.pool_roots) or self.root}: roi.localizer_crops "
                f"sizes its crops in disc diameters, and none of the localizer's {len(radii)} "
                "training images has a mask to measure one (a centre-only pool has none); set "
                "roi.localizer_diameter_px=D, the typical disc diameter in those photographs' "
                "native px (78 for the IDRiD pool's 640-px photographs, see ../shared/README.md)"
            )
        return float(np.median(known))

    @property
    def crop_size(self) -> int:
        """The window (network input) in px: the segmenter's crop size."""
        return self.preprocess_config.image_size

    @property
    def margin(self) -> int:
        """Native px a window moves at most in x and y: ``floor(localizer_jitter * side)``."""
        return jitter_px(self.spec, self.side_px)

    @property
    def full_side(self) -> int:
        """The cached native box's side: the window plus the jitter margin on each side."""
        return self.side_px + 2 * self.margin

    def _by_folder(self, part: str) -> list[tuple[str, list[str]]]:
        """The part's images per source folder: (prefix, image ids of that folder)."""
        by_set = {id(data): prefix for prefix, (_, data) in self.sources.items()}
        groups: dict[str, list[str]] = {}
        for data, row in self.items(part):
            groups.setdefault(by_set[id(data)], []).append(data.ids[row])
        return list(groups.items())

    def part_crops(self, part: str) -> list[tuple[NativeSet, PreprocessedSet]]:
        """The native boxes of ``train`` / ``val`` around the true centres, per source folder."""
        if part == "test":
            raise DatasetError(TEST_SKIPPED)
        if part not in self.crops:
            built = []
            for prefix, ids in self._by_folder(part):
                dataset, data = self.sources[prefix]
                centres = true_centres(data, ids)
                boxes = {i: box_around(xy, self.full_side) for i, xy in centres.items()}
                crops = build_native(
                    dataset,
                    data,
                    ids,
                    boxes,
                    self.side_px,
                    self.preprocess_config,
                    self.cache_dir,
                    self.mask_threshold,
                )
                built.append((crops, data))
            self.crops[part] = built
        return self.crops[part]

    def val_offsets(self, n: int, part_index: int) -> np.ndarray:
        """Fixed window offsets (native px) of the validation windows: the same every time."""
        rng = np.random.default_rng([self.split_seed, 13, part_index])
        return rng.integers(0, self.full_side - self.side_px + 1, (n, 2))

    # ------------------------------------------------------------------ facts for the run

    def mean_train_center(self) -> tuple[float, float]:
        """The constant baseline: the mean training centre in the window (normalised).

        A window's offset is uniform in [0, 2m] native px, so on average it is the ``side`` px
        box centred in the cached one, i.e. the box around the true centre (and the mapping to the
        window's pixels is affine in the offset).
        """
        points = []
        for prefix, ids in self._by_folder("train"):
            data = self.sources[prefix][1]
            for xy in true_centres(data, ids).values():
                box = box_around(xy, self.full_side)
                corner = (box.x0 + self.margin, box.y0 + self.margin)  # the mean window's
                points.append((np.asarray(xy) - corner + 0.5) / self.side_px)
        u, v = np.mean(points, axis=0)
        return float(u), float(v)

    def counts(self) -> dict[str, int]:
        """Train and val only: the test fold is not scored (:data:`TEST_SKIPPED`)."""
        return {f"n_{part}": len(self.selection[part]) for part in ("train", "val")}

    def crop_facts(self) -> dict:
        """What the crops were: stored in checkpoints and in ``encoder.pt``'s ``extra["roi"]``."""
        return {
            "localizer_crops": True,
            "side_diameters": self.spec.side_diameters,
            "diameter_px": self.diameter_px,
            "diameter_source": (
                "roi.localizer_diameter_px" if self.diameter_option is not None else "train masks"
            ),
            "side_px": self.side_px,
            "crop_size": self.crop_size,
            "jitter": self.spec.jitter,
        }

    def encoder_facts(self) -> dict:
        """The crops its encoder has seen: ``encoder.pt``'s ``extra["roi"]``."""
        return {"roi": self.crop_facts()}

    def identity(self) -> dict[str, str]:
        facts = json.dumps(self.crop_facts(), sort_keys=True)
        return {**super().identity(), "roi_localizer": facts, "crop_pipeline": CROP_PIPELINE}

    def state_dict(self) -> dict:
        """Lightning stores this in every checkpoint: it marks the crop localizer as such."""
        return {LOCALIZER_ENTRY: self.crop_facts()} if self.side_px is not None else {}

    # ------------------------------------------------------------------ loaders

    def samples(self, part: str, augmentation, train: bool) -> FundusSamples:
        """Random windows in training, fixed ones in validation; no test set."""
        parts = []
        for k, (crops, data) in enumerate(self.part_crops(part)):
            offsets = None if train else self.val_offsets(len(crops.ids), k)
            parts.append(WindowSamples(crops, data, offsets, augmentation))
        return parts[0] if len(parts) == 1 else JoinedSamples(parts)
