"""LocalizerModule: metric arithmetic in native pixels, the baseline, overfitting, the hand-off."""

import math

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from locseg.models.encoder_io import load_encoder_checkpoint
from locseg.models.localizer import LocalizerModule, localization_errors
from locseg.models.segmenter import SegmenterModule
from locseg.models.unet import HeatmapHead, LocalizationHead

SIZE = 32
NATIVE = 128.0  # pretend the originals were 128 x 128 px


def disc_samples(n: int, seed: int = 0, radius_known: bool = True) -> list[dict]:
    """Dark noisy images with one bright disc each; centres normalised as x/W, y/H."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] + 0.5
    samples = []
    for i in range(n):
        cx, cy = rng.uniform(8, SIZE - 8, size=2)
        r = rng.uniform(3.5, 5.5)
        disc = (xx - cx) ** 2 + (yy - cy) ** 2 <= r**2
        image = 0.2 + 0.05 * rng.standard_normal((SIZE, SIZE)) + 0.7 * disc
        samples.append(
            {
                "image": torch.tensor(np.clip(image, 0, 1), dtype=torch.float32)[None],
                "center": torch.tensor([cx / SIZE, cy / SIZE], dtype=torch.float32),
                "native_size": torch.tensor([NATIVE, NATIVE]),
                "radius": torch.tensor(r * NATIVE / SIZE if radius_known else math.nan),
                "index": torch.tensor(i),
            }
        )
    return samples


@pytest.fixture(autouse=True)
def one_thread():
    """Two intra-op threads on a busy 2-core machine spin-wait: 1 thread is ~10x faster here."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _trainer(epochs: int = 1) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )


def _module(**kwargs) -> LocalizerModule:
    torch.manual_seed(0)
    options = {"depth": 2, "base_width": 8, "dropout": 0.0, "input_size": SIZE, **kwargs}
    return LocalizerModule(**options)


def test_errors_are_mapped_to_native_pixels():
    pred = torch.tensor([[0.5, 0.5], [0.5, 0.5]])
    center = torch.tensor([[0.6, 0.5], [0.5, 0.3]])
    native = torch.tensor([[100.0, 50.0], [100.0, 50.0]])
    radius = torch.tensor([15.0, math.nan])
    errors = localization_errors(pred, center, native, radius, torch.tensor([[0.6, 0.5]]))
    torch.testing.assert_close(errors["dist_px"], torch.tensor([10.0, 10.0]))
    torch.testing.assert_close(errors["mse_px2"], torch.tensor([100.0, 100.0]))
    torch.testing.assert_close(errors["dist_frac_width"], torch.tensor([0.1, 0.1]))
    torch.testing.assert_close(errors["within_radius"], torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(errors["radius_known"], torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(errors["baseline_dist_px"], torch.tensor([0.0, math.hypot(10, 10)]))
    torch.testing.assert_close(errors["image_centre_dist_px"], torch.tensor([10.0, 10.0]))


def test_logged_baseline_is_the_constant_prediction_distance():
    samples = disc_samples(6)
    module = _module()
    module.set_baseline_center((0.25, 0.75))
    assert torch.equal(module.state_dict()["baseline_center"], torch.tensor([[0.25, 0.75]]))
    metrics = _trainer().validate(module, DataLoader(samples, batch_size=4), verbose=False)[0]
    expected = np.mean(
        [np.hypot(*((np.array([0.25, 0.75]) - s["center"].numpy()) * NATIVE)) for s in samples]
    )
    assert metrics["val/baseline_dist_px"] == pytest.approx(expected, rel=1e-5)
    assert metrics["val/mse_px2"] >= metrics["val/dist_px"] ** 2 * (1 - 1e-5)  # Jensen
    assert metrics["val/dist_frac_width"] == pytest.approx(metrics["val/dist_px"] / NATIVE)
    assert 0.0 <= metrics["val/within_radius"] <= 1.0


def test_within_radius_is_skipped_when_no_radius_is_known():
    loader = DataLoader(disc_samples(4, radius_known=False), batch_size=4)
    metrics = _trainer().test(_module(), loader, verbose=False)[0]
    assert "test/within_radius" not in metrics
    assert {"test/loss", "test/dist_px", "test/mse_px2", "test/baseline_dist_px"} <= metrics.keys()


def test_overfitting_drives_the_pixel_error_down(tmp_path):
    samples = disc_samples(8)
    train = DataLoader(samples, batch_size=8, shuffle=True)
    val = DataLoader(samples, batch_size=8)
    module = _module(lr=1e-3, preprocess={"gamma": 1.2})
    trainer = _trainer(epochs=60)
    before = trainer.validate(module, val, verbose=False)[0]["val/dist_px"]
    trainer.fit(module, train, val)
    assert "train/loss" in trainer.callback_metrics
    final = trainer.validate(module, val, verbose=False)[0]
    after, baseline = final["val/dist_px"], final["val/baseline_dist_px"]
    print(f"val/dist_px before {before:.2f} px, after {after:.2f} px, baseline {baseline:.2f} px")
    assert after < 0.3 * before
    assert after < baseline  # the network beats always answering the image centre

    batch = next(iter(val))
    pred = module.predict_step(batch, 0)
    assert pred.shape == (8, 2)
    out = module.validation_step(batch, 0)
    assert set(out) == {"loss", "pred"} and not out["pred"].requires_grad

    ckpt = load_encoder_checkpoint(module.export_encoder(tmp_path / "encoder.pt"))
    assert ckpt["input_size"] == SIZE and ckpt["preprocess"] == {"gamma": 1.2}
    assert torch.equal(
        ckpt["state_dict"]["bottleneck.0.weight"], module.encoder.bottleneck[0].weight
    )


def blob_samples(n: int, seed: int) -> list[dict]:
    """A Gaussian blob (sigma 2.5 px) at a random place in noise: a pure translation task."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] + 0.5
    samples = []
    for i in range(n):
        cx, cy = rng.uniform(5, SIZE - 5, size=2)
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 2.5**2))
        image = blob + 0.05 * rng.standard_normal((SIZE, SIZE))
        samples.append(
            {
                "image": torch.tensor(image, dtype=torch.float32)[None],
                "center": torch.tensor([cx / SIZE, cy / SIZE], dtype=torch.float32),
                "native_size": torch.tensor([float(SIZE), float(SIZE)]),
                "radius": torch.tensor(2.5),
                "index": torch.tensor(i),
            }
        )
    return samples


def test_heatmap_head_learns_translated_blobs_and_hands_on_the_encoder(tmp_path):
    """Held-out error falls far below the constant baseline; the encoder transfers as before."""
    module = _module(head="heatmap", lr=1e-3, preprocess={"gamma": 1.2})
    assert isinstance(module.head, HeatmapHead)
    assert isinstance(_module().head, LocalizationHead)  # head=linear stays the default
    train = DataLoader(blob_samples(64, seed=0), batch_size=16, shuffle=True)
    held_out = DataLoader(blob_samples(32, seed=1), batch_size=32)
    trainer = _trainer(epochs=25)  # 100 steps, under 2 s on one thread
    before = trainer.validate(module, held_out, verbose=False)[0]
    trainer.fit(module, train)
    after = trainer.validate(module, held_out, verbose=False)[0]
    print(
        f"heatmap head: {before['val/dist_px']:.2f} -> {after['val/dist_px']:.2f} px, "
        f"baseline {after['val/baseline_dist_px']:.2f} px"
    )
    assert after["val/loss"] < 0.1 * before["val/loss"]
    assert after["val/dist_px"] < 0.2 * after["val/baseline_dist_px"]  # measured 0.22 vs 7.7 px

    path = module.export_encoder(tmp_path / "encoder.pt")
    ckpt = load_encoder_checkpoint(path)
    assert set(ckpt["state_dict"]) == set(module.encoder.state_dict())  # no head tensor in it
    segmenter = SegmenterModule(
        depth=2,
        base_width=8,
        dropout=0.0,
        init="localizer",
        encoder_ckpt=str(path),
        input_size=SIZE,
        preprocess={"gamma": 1.2},
    )
    for name, tensor in segmenter.encoder.state_dict().items():
        assert torch.equal(tensor, module.encoder.state_dict()[name]), name


def test_heatmap_regulariser_adds_the_js_term_and_needs_the_heatmap_head():
    batch = next(iter(DataLoader(blob_samples(4, seed=2), batch_size=4)))
    plain = _module(head="heatmap").eval()
    regularised = _module(head="heatmap", heatmap_reg=1.0, heatmap_sigma=1.0).eval()
    regularised.load_state_dict(plain.state_dict())
    with torch.no_grad():
        gap = regularised.batch_loss(batch) - plain.batch_loss(batch)
    assert 0.0 < gap.item() <= math.log(2)  # a Jensen-Shannon divergence, weight 1
    with pytest.raises(ValueError, match="model.head=heatmap or model.heatmap_reg=0"):
        _module(head="linear", heatmap_reg=0.5)


@pytest.mark.parametrize("head", ["linear", "heatmap"])
def test_centres_and_loss_stay_float32_under_bf16_autocast(head):
    """trainer=gpu runs bf16-mixed: a bf16 centre is off by ~1/256 of the width (3 px at 2000)."""
    module = _module(head=head).eval()
    batch = next(iter(DataLoader(blob_samples(4, seed=3), batch_size=4)))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        bottleneck, _ = module.encoder(batch["image"])
        pred, loss = module(batch["image"]), module.batch_loss(batch)
    assert bottleneck.dtype == torch.bfloat16  # the encoder does run in bf16
    assert pred.dtype == torch.float32 and loss.dtype == torch.float32
    with torch.no_grad():
        torch.testing.assert_close(pred, module.head(bottleneck.float()), atol=1e-6, rtol=0)
