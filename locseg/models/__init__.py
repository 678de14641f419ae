"""Networks and LightningModules: they know tensors, never files of the dataset (see DESIGN.md)."""

from locseg.models.encoder_io import (
    EncoderCheckpointError,
    load_encoder_checkpoint,
    load_into,
    save_encoder,
)
from locseg.models.localizer import LocalizerModule
from locseg.models.losses import binary_dice, binary_iou, neg_log_dice_loss, soft_dice
from locseg.models.segmenter import SegmenterModule
from locseg.models.unet import (
    Decoder,
    Encoder,
    HeatmapHead,
    LocalizationHead,
    SegmentationHead,
)

__all__ = [
    "Decoder",
    "Encoder",
    "EncoderCheckpointError",
    "HeatmapHead",
    "LocalizationHead",
    "LocalizerModule",
    "SegmentationHead",
    "SegmenterModule",
    "binary_dice",
    "binary_iou",
    "load_encoder_checkpoint",
    "load_into",
    "neg_log_dice_loss",
    "save_encoder",
    "soft_dice",
]
