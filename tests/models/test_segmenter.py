"""SegmenterModule: overfitting, per-image test Dice, what "frozen" and "fine-tuned" mean."""

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from locseg.models.encoder_io import EncoderCheckpointError, save_encoder
from locseg.models.segmenter import SegmenterModule
from locseg.models.unet import Encoder

SIZE = 32
ARCH = {"depth": 2, "base_width": 8, "dropout": 0.0}
PREPROCESS = {"gamma": 1.2}


@pytest.fixture(autouse=True)
def one_thread():
    """Two intra-op threads on a busy 2-core machine spin-wait: 1 thread is ~10x faster here."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def disc_samples(n: int, seed: int = 0) -> list[dict]:
    """Dark noisy images with one bright disc each, and the disc as the mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] + 0.5
    samples = []
    for i in range(n):
        cx, cy = rng.uniform(9, SIZE - 9, size=2)
        disc = (xx - cx) ** 2 + (yy - cy) ** 2 <= rng.uniform(4.0, 6.0) ** 2
        image = 0.2 + 0.05 * rng.standard_normal((SIZE, SIZE)) + 0.6 * disc
        samples.append(
            {
                "image": torch.tensor(np.clip(image, 0, 1), dtype=torch.float32)[None],
                "mask": torch.tensor(disc, dtype=torch.float32)[None],
                "index": torch.tensor(100 + i),
            }
        )
    return samples


def _trainer(epochs: int) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )


@pytest.fixture
def encoder_ckpt(tmp_path):
    """An encoder.pt whose weights and BN running statistics are not a fresh encoder's."""
    torch.manual_seed(1)
    encoder = Encoder(in_channels=1, **ARCH).train()
    with torch.no_grad():
        for _ in range(3):
            encoder(torch.rand(4, 1, SIZE, SIZE) * 2 + 0.5)
    path = save_encoder(tmp_path / "encoder.pt", encoder, SIZE, PREPROCESS)
    return path, {k: v.clone() for k, v in encoder.state_dict().items()}


def _transfer(path, freeze: bool, lr: float = 1e-3) -> SegmenterModule:
    torch.manual_seed(0)
    return SegmenterModule(
        **ARCH,
        lr=lr,
        init="localizer",
        encoder_ckpt=str(path),
        freeze_encoder=freeze,
        input_size=SIZE,
        preprocess=PREPROCESS,
    )


def _loaders(n: int = 8):
    samples = disc_samples(n)
    return DataLoader(samples, batch_size=8, shuffle=True), DataLoader(samples, batch_size=4)


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_scratch_overfits_and_keeps_the_per_image_test_dice():
    train, val = _loaders()
    torch.manual_seed(0)
    module = SegmenterModule(**ARCH, lr=1e-2, input_size=SIZE)
    trainer = _trainer(epochs=30)
    before = trainer.validate(module, val, verbose=False)[0]
    trainer.fit(module, train, val)
    assert "train/loss" in trainer.callback_metrics
    after = trainer.test(module, val, verbose=False)[0]
    print(f"dice before {before['val/dice']:.3f}, after {after['test/dice']:.3f}")
    assert after["test/dice"] > 0.9
    assert after["test/loss"] < before["val/loss"]
    assert 0 < after["test/iou"] <= after["test/dice"]  # IoU <= Dice image by image

    per_image = module.test_per_image_dice
    assert sorted(per_image) == list(range(100, 108))
    assert np.mean(list(per_image.values())) == pytest.approx(after["test/dice"], rel=1e-5)

    batch = next(iter(val))
    out = module.test_step(batch, 0)
    assert set(out) == {"loss", "pred"} and out["pred"].shape == (4, 1, SIZE, SIZE)
    prob = module.predict_step(batch, 0)
    assert prob.min() >= 0 and prob.max() <= 1


def test_frozen_encoder_is_bit_identical_after_training(encoder_ckpt):
    path, reference = encoder_ckpt
    module = _transfer(path, freeze=True)
    for name, tensor in module.encoder.state_dict().items():  # the hand-off loads equal weights
        assert torch.equal(tensor, reference[name]), name
    decoder_before = _state(module.decoder)
    optimizer = module.configure_optimizers()
    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert not optimized & {id(p) for p in module.encoder.parameters()}

    module.train()  # what Lightning or user code may do: the encoder must stay in eval mode
    assert not module.encoder.training and module.decoder.training
    train, val = _loaders()
    _trainer(epochs=3).fit(module, train, val)

    assert not module.encoder.training
    for name, tensor in module.encoder.state_dict().items():
        assert torch.equal(tensor, reference[name]), f"frozen encoder changed: {name}"
    assert any(
        not torch.equal(v, decoder_before[k]) for k, v in module.decoder.state_dict().items()
    )


def test_fine_tuning_changes_the_encoder(encoder_ckpt):
    path, reference = encoder_ckpt
    module = _transfer(path, freeze=False)
    train, val = _loaders()
    _trainer(epochs=2).fit(module, train, val)
    state = module.encoder.state_dict()
    assert not torch.equal(state["levels.0.0.weight"], reference["levels.0.0.weight"])
    assert not torch.equal(state["levels.0.1.running_mean"], reference["levels.0.1.running_mean"])


def test_scratch_ignores_freeze_and_trains_everything():
    module = SegmenterModule(**ARCH, init="scratch", freeze_encoder=True, input_size=SIZE)
    assert all(p.requires_grad for p in module.parameters())
    assert not module.encoder_frozen


def test_transfer_needs_a_compatible_checkpoint(tmp_path, encoder_ckpt):
    path, _ = encoder_ckpt
    with pytest.raises(EncoderCheckpointError, match="model.encoder_ckpt"):
        SegmenterModule(**ARCH, init="localizer", input_size=SIZE)
    missing = tmp_path / "L" / "encoder.pt"
    with pytest.raises(EncoderCheckpointError, match="locseg.train") as info:
        SegmenterModule(**ARCH, init="localizer", encoder_ckpt=str(missing), input_size=SIZE)
    assert str(missing) in str(info.value)
    with pytest.raises(EncoderCheckpointError, match=r"\(8, 1, 3, 3\).*\(4, 1, 3, 3\)"):
        SegmenterModule(
            **{**ARCH, "base_width": 4},
            init="localizer",
            encoder_ckpt=str(path),
            input_size=SIZE,
            preprocess=PREPROCESS,
        )
    with pytest.raises(EncoderCheckpointError, match="preprocessing mismatch"):
        SegmenterModule(**ARCH, init="localizer", encoder_ckpt=str(path), input_size=SIZE)
    with pytest.raises(ValueError, match="model.init"):
        SegmenterModule(**ARCH, init="imagenet", input_size=SIZE)


def test_test_dice_counts_a_repeated_image_once():
    """DistributedSampler pads a rank with repeats; test/dice and test/iou must ignore them."""
    torch.manual_seed(0)
    module = SegmenterModule(**ARCH, lr=1e-2, input_size=SIZE)
    samples = disc_samples(6)
    _trainer(epochs=3).fit(module, DataLoader(samples, batch_size=6))  # Dice varies by image
    unique = _trainer(1).test(module, DataLoader(samples, batch_size=4), verbose=False)[0]
    dice, iou = dict(module.test_per_image_dice), dict(module.test_per_image_iou)
    assert sorted(dice) == sorted(iou) == list(range(100, 106))

    odd = max(dice, key=lambda i: abs(dice[i] - np.mean(list(dice.values()))))
    padded = samples + [samples[odd - 100]] * 3  # the image furthest from the mean, 3 more times
    naive = np.mean([dice[int(s["index"])] for s in padded])
    assert abs(naive - np.mean(list(dice.values()))) > 0.01  # the repeats would show
    repeated = _trainer(1).test(module, DataLoader(padded, batch_size=4), verbose=False)[0]

    assert repeated["test/dice"] == pytest.approx(np.mean(list(dice.values())), abs=1e-6)
    assert repeated["test/iou"] == pytest.approx(np.mean(list(iou.values())), abs=1e-6)
    assert repeated["test/dice"] == pytest.approx(unique["test/dice"], abs=1e-6)
    assert module.test_per_image_dice == pytest.approx(dice)
