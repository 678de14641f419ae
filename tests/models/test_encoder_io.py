"""encoder.pt: round trip, safe loading, and errors that say what is wrong and how to fix it."""

import pytest
import torch
from omegaconf import OmegaConf

from locseg.models.encoder_io import (
    FORMAT,
    EncoderCheckpointError,
    load_encoder_checkpoint,
    load_into,
    save_encoder,
)
from locseg.models.unet import Encoder

PREPROCESS = {"image_size": 32, "clahe_clip": 2.0, "gamma": 1.2}


def _trained_encoder(**arch) -> Encoder:
    """An encoder whose weights and BN running statistics differ from a fresh one."""
    torch.manual_seed(0)
    encoder = Encoder(**{"depth": 2, "base_width": 4, **arch}).train()
    with torch.no_grad():
        for _ in range(3):
            encoder(torch.rand(4, encoder.in_channels, 32, 32) * 3 + 1)
        for p in encoder.parameters():
            p.add_(0.01)
    return encoder


def test_round_trip_copies_every_tensor(tmp_path):
    source = _trained_encoder()
    path = save_encoder(tmp_path / "run" / "encoder.pt", source, 32, PREPROCESS, {"note": "x"})
    assert [p.name for p in path.parent.iterdir()] == ["encoder.pt"]  # no temp file left

    raw = torch.load(path, weights_only=True)
    assert raw["format"] == FORMAT
    assert raw["arch"] == source.arch
    assert raw["input_size"] == 32 and raw["preprocess"] == PREPROCESS
    assert raw["extra"] == {"note": "x"}
    assert all(t.device.type == "cpu" for t in raw["state_dict"].values())

    target = Encoder(depth=2, base_width=4)
    load_into(target, load_encoder_checkpoint(path), input_size=32, preprocess=PREPROCESS)
    theirs, ours = source.state_dict(), target.state_dict()
    assert theirs.keys() == ours.keys()
    assert any("running_mean" in k for k in ours)
    for name in ours:
        assert torch.equal(ours[name], theirs[name]), name


def test_omegaconf_preprocess_is_stored_as_plain_dict(tmp_path):
    config = OmegaConf.create({"preprocess": {"gamma": 1.2, "tiles": [8, 8]}})
    path = save_encoder(tmp_path / "e.pt", Encoder(depth=1, base_width=2), 16, config.preprocess)
    assert load_encoder_checkpoint(path)["preprocess"] == {"gamma": 1.2, "tiles": [8, 8]}


def test_wrong_architecture_shows_both_architectures_and_shapes(tmp_path):
    path = save_encoder(tmp_path / "encoder.pt", _trained_encoder(base_width=4), 32, None)
    ckpt = load_encoder_checkpoint(path)
    with pytest.raises(EncoderCheckpointError) as info:
        load_into(Encoder(depth=2, base_width=8), ckpt)
    message = str(info.value)
    assert "levels.0.0.weight" in message
    assert "(4, 1, 3, 3)" in message and "(8, 1, 3, 3)" in message
    assert "'base_width': 4" in message and "'base_width': 8" in message
    assert "net.depth" in message and str(path) in message


def test_wrong_depth_names_the_missing_tensor(tmp_path):
    path = save_encoder(tmp_path / "encoder.pt", _trained_encoder(depth=2), 32, None)
    with pytest.raises(EncoderCheckpointError, match="missing"):
        load_into(Encoder(depth=3, base_width=4), load_encoder_checkpoint(path))


def test_missing_file_names_the_path_and_how_to_make_it(tmp_path):
    path = tmp_path / "nowhere" / "encoder.pt"
    with pytest.raises(EncoderCheckpointError) as info:
        load_encoder_checkpoint(path)
    assert str(path) in str(info.value)
    assert "python -m locseg.train +phase=localize" in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("content", ["dict", "bytes"])
def test_a_foreign_file_is_rejected(tmp_path, content):
    path = tmp_path / "other.pt"
    if content == "dict":
        torch.save({"state_dict": {}, "pytorch-lightning_version": "2.6"}, path)
    else:
        path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(EncoderCheckpointError, match="not a locseg encoder file"):
        load_encoder_checkpoint(path)


def test_input_size_and_preprocess_must_match(tmp_path):
    path = save_encoder(tmp_path / "encoder.pt", _trained_encoder(), 32, PREPROCESS)
    ckpt = load_encoder_checkpoint(path)
    with pytest.raises(EncoderCheckpointError, match=r"32 px.*64 px"):
        load_into(Encoder(depth=2, base_width=4), ckpt, input_size=64)
    with pytest.raises(EncoderCheckpointError, match=r"preprocessing mismatch") as info:
        load_into(Encoder(depth=2, base_width=4), ckpt, preprocess={**PREPROCESS, "gamma": 1.0})
    assert "'gamma': 1.2" in str(info.value) and "'gamma': 1.0" in str(info.value)
    with pytest.raises(EncoderCheckpointError, match=r"preprocessing mismatch"):
        load_into(Encoder(depth=2, base_width=4), ckpt, preprocess={})


def test_an_encoder_with_non_finite_weights_is_not_written(tmp_path):
    """A training that diverged on its last step leaves NaN weights: nothing is handed on."""
    encoder = Encoder(depth=2, base_width=4)
    with torch.no_grad():
        next(encoder.parameters()).fill_(float("nan"))
    with pytest.raises(EncoderCheckpointError, match="NaN/inf .* lower lr.localize"):
        save_encoder(tmp_path / "encoder.pt", encoder, 32, {})
    assert not (tmp_path / "encoder.pt").exists()
