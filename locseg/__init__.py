"""locseg: transfer a U-Net encoder from disc localization to disc segmentation."""

import os

# Nothing phones home: set before albumentations / wandb are imported anywhere.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

__version__ = "0.1.0"
