"""Inference: checkpoints -> preprocessing -> model -> native-size outputs.

``predict`` (new photographs), ``evaluate`` (a labelled dataset) and the training entry point
(native-resolution test metrics) all run a network through these functions, so a photograph is
preprocessed, batched and mapped back to its own pixels the same way everywhere:

- a checkpoint carries the preprocessing it was trained with;
  :func:`~locseg.inference.checkpoints.load_model` restores both;
- network inputs are uint8 (S, S) arrays, fed as (B, 1, S, S) floats in [0, 1] exactly as the
  training cache is (:func:`~locseg.inference.batches.forward`);
- every network input is the photograph's *frame* (:mod:`locseg.data.frames`): the whole
  photograph stretched (the default) or the square around its field of view
  (``data.preprocess.crop_fov``); outputs go back through that frame. A segmenter's (S, S)
  probabilities are resized bilinearly (OpenCV's half-pixel convention) onto the frame, placed in
  the photograph and then thresholded (:func:`~locseg.inference.native.native_mask`); a
  localizer's normalised (u, v) become native pixels
  (:func:`~locseg.inference.native.centre_to_native`). For the whole-photograph frame both are
  exactly what they were before frames existed;
- post-processing (:class:`~locseg.inference.postprocess.PostProcess`): horizontal-flip TTA on the
  probabilities, then largest component and hole filling on the native mask, all off by
  default; :func:`locseg.evaluation.native.choose_native_postprocess` decides them on validation
  images;
- a segmenter trained on disc-centred crops (``data.roi``; its checkpoint carries the crop side)
  sees the crop around the centre the *localizer predicts*, and its probabilities are pasted back
  into the photograph (:func:`locseg.roi.geometry.paste_back`), zero outside the crop: a missed
  centre costs Dice. It cannot run without a localizer.

Modules, in the order data flows through them:

- :mod:`~locseg.inference.options`: the options every command shares, checked; the error type;
- :mod:`~locseg.inference.checkpoints`: load a checkpoint, its role, preprocessing and crop;
- :mod:`~locseg.inference.batches`: decode and batch photographs, run the networks on them;
- :mod:`~locseg.inference.native`: map outputs back to each photograph's own pixels;
- :mod:`~locseg.inference.postprocess`: flip TTA and the mask clean-ups (what they do);
- :mod:`~locseg.inference.outputs`: predict on new photographs and write masks, overlays, CSV.
"""
