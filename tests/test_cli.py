"""The documented commands, run as a user types them (plus small-size overrides)."""

from __future__ import annotations

import json

from test_sweeps import FAST, locseg


def test_prepare_then_localize_then_segment_as_documented(tmp_path):
    data, loc, seg = tmp_path / "synthetic", tmp_path / "L", tmp_path / "S"
    out = locseg(
        "locseg.prepare",
        "synthetic",
        str(data),
        "--n-localize",
        "16",
        "--n-segment",
        "10",
        "--size",
        "64",
        "--seed",
        "3",
    )
    assert "Dataset is sound" in out.stdout
    locseg("locseg.check_data", str(data))
    locseg("locseg.train", "+phase=localize", f"data.root={data}", f"hydra.run.dir={loc}", *FAST)
    assert (loc / "encoder.pt").is_file() and (loc / ".hydra" / "config.yaml").is_file()
    locseg(
        "locseg.train",
        "+phase=segment",
        f"data.root={data}",
        "data.fold=0",
        "data.fraction=0.5",
        "model.init=localizer",
        f"model.encoder_ckpt={loc / 'encoder.pt'}",
        f"hydra.run.dir={seg}",
        *FAST,
    )
    metrics = json.loads((seg / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["arm"] == "localizer-frozen"
    assert metrics["fraction"] == 0.5 and len(metrics["per_image_test_dice"]) == metrics["n_test"]
    localize = json.loads((loc / "metrics.json").read_text())
    assert {"dist_px", "baseline_dist_px", "image_centre_dist_px"} <= set(localize["test"])
