"""Training: one job of a sweep, and what one phase hands on to the next.

- :mod:`~locseg.training.job`: build the DataModule and LightningModule from the config, fit,
  test the best checkpoint, write ``metrics.json``;
- :mod:`~locseg.training.handoff`: a localizer's ``encoder.pt`` and, with ``roi``, its checked
  checkpoint for the test crops (:mod:`locseg.roi.centres`), refused on leakage.
"""
