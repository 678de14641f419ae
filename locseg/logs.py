"""Quiet, honest logs: silence the lines we know are noise, by their exact text, and nothing else.

Every training job used to print Lightning's advertisement for ``litlogger`` and a torch
deprecation raised inside Lightning, burying the warnings that matter. Each entry below names where
the line comes from and why it is harmless here; any other warning still shows.
"""

from __future__ import annotations

import logging
import warnings

# (regex matched against the start of the warning text, category, why it is noise here)
KNOWN_WARNINGS: tuple[tuple[str, type[Warning], str], ...] = (
    (
        # torch/utils/_pytree.py: the LeafSpec class is deprecated; pytorch_lightning's
        # utilities/_pytree.py still instantiates it on every batch it flattens.
        r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        FutureWarning,
        "a deprecation inside Lightning, not in locseg",
    ),
    (
        r".*module\(s\) in eval mode at the start of training",
        UserWarning,
        "the frozen encoder is in eval mode on purpose (batch-norm statistics stay fixed)",
    ),
    (
        r".*is smaller than the logging interval",
        UserWarning,
        "a small fold has fewer batches per epoch than log_every_n_steps; metrics log per epoch",
    ),
    (
        r".*does not have many workers",
        UserWarning,
        "num_workers=0 is the measured CPU default (the loader outruns a training step)",
    ),
)

# Lightning's rank_zero_info goes to the logger of the module that set it (pytorch_lightning sets
# its own; the unified ``lightning`` package has its own names).
RANK_ZERO_LOGGERS = (
    "pytorch_lightning.utilities.rank_zero",
    "lightning_fabric.utilities.rank_zero",
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
)


class DropLitLoggerTip(logging.Filter):
    """Drop the "💡 Tip: ... try installing litlogger" line that
    ``pytorch_lightning/trainer/connectors/logger_connector/logger_connector.py`` logs whenever a
    Trainer has no LitLogger (every locseg run: we log to CSV and offline W&B). Lightning has no
    switch for it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("Tip:" in message and "litlogger" in message)


TIP_FILTER = DropLitLoggerTip()


def quiet_known_noise() -> None:
    """Ignore exactly the warnings in ``KNOWN_WARNINGS`` and Lightning's litlogger tip.

    Idempotent (the same filters are not stacked twice); call it before building a Trainer.
    """
    for message, category, _why in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for name in RANK_ZERO_LOGGERS:
        logging.getLogger(name).addFilter(TIP_FILTER)
