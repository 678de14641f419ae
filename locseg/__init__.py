"""locseg: transfer a U-Net encoder from disc localization to disc segmentation."""

import os

# Nothing phones home: set before albumentations / wandb are imported anywhere.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

from locseg.logs import quiet_known_noise  # noqa: E402  (after the environment defaults)

__version__ = "0.1.0"
__all__ = ["__version__", "quiet_known_noise"]
