"""Evaluation: how good a trained network is, on the photographs' own pixels.

- :mod:`~locseg.evaluation.metrics`: Dice, IoU and HD95 of boolean masks at native resolution;
- :mod:`~locseg.evaluation.native`: a segmenter scored on a labelled, cached image set;
- :mod:`~locseg.evaluation.postprocess`: which post-processing to keep, chosen on validation;
- :mod:`~locseg.evaluation.scoring`: what a finished training job reports beyond Lightning's;
- :mod:`~locseg.evaluation.scope`: which images to score a checkpoint on, and leakage warnings;
- :mod:`~locseg.evaluation.checkpoint`: ``python -m locseg.evaluate``'s run, files written.
"""
