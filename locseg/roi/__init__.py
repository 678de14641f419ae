"""Crops (regions of interest): everything about the disc-centred square a segmenter sees.

- :mod:`~locseg.roi.geometry`: the square box, the crop of a photograph and its exact inverse;
- :mod:`~locseg.roi.datamodule`: the crop caches and the segmentation DataModule on crops;
- :mod:`~locseg.roi.localization`: the crop-scale localizer's DataModule;
- :mod:`~locseg.roi.centres`: where test crops come from (the localizer's predicted centres, or
  the true ones as an oracle bound).

The first three sit at the data layer (they import :mod:`locseg.data` only); ``centres`` runs a
localizer, so it sits above :mod:`locseg.inference`. Import the module you need: this package
imports none of them itself.
"""
