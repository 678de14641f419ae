"""The shared training loop: the divergence guard stops a run; the lr schedule does what it says."""

import math
import re

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from locseg.models.localizer import LocalizerModule
from locseg.models.metrics import DivergenceGuard, lr_factor
from locseg.models.segmenter import SegmenterModule

SIZE = 16


def samples(n: int = 8) -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    return [
        {
            "image": torch.rand(1, SIZE, SIZE, generator=generator),
            "center": torch.rand(2, generator=generator),
            "mask": (torch.rand(1, SIZE, SIZE, generator=generator) > 0.5).float(),
            "native_size": torch.tensor([64.0, 64.0]),
            "radius": torch.tensor(5.0),
            "index": torch.tensor(i),
        }
        for i in range(n)
    ]


def _fit(module: pl.LightningModule, max_steps: int, callbacks=()) -> pl.Trainer:
    trainer = pl.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=list(callbacks),
    )
    trainer.fit(module, DataLoader(samples(), batch_size=2, shuffle=True))
    return trainer


def _localizer(**kwargs) -> LocalizerModule:
    torch.manual_seed(0)
    return LocalizerModule(depth=1, base_width=2, dropout=0.0, input_size=SIZE, **kwargs)


class NanAtStep3(LocalizerModule):
    def batch_loss(self, batch):
        loss = super().batch_loss(batch)
        return loss * math.nan if self.global_step == 3 else loss


def test_a_nan_loss_stops_training_at_that_step_with_the_fix():
    torch.manual_seed(0)
    module = NanAtStep3(depth=1, base_width=2, dropout=0.0, input_size=SIZE, lr=2e-4)
    with pytest.raises(RuntimeError) as info:
        _fit(module, max_steps=10)
    message = str(info.value)
    assert message.startswith("training diverged at step 3: the training loss is nan")
    assert "Lower lr.localize (now 0.0002)" in message
    assert "model.scheduler=cosine" in message
    assert module.global_step == 3  # the bad step's update never ran


def test_an_exploding_learning_rate_is_caught_in_a_tiny_fit():
    module = _localizer(lr=50.0)  # RMSprop at lr 50: loss 0.29, then 8e14 at the next step
    with pytest.raises(RuntimeError) as info:
        _fit(module, max_steps=40)
    pattern = r"training diverged at step 1: the training loss \d\.\d+e\+\d+ exceeds 1000 x 0\.287"
    assert re.match(pattern, str(info.value)), str(info.value)
    assert "Lower lr.localize (now 50)" in str(info.value)


def test_a_sane_learning_rate_passes_the_guard():
    module = _localizer(lr=1e-3)
    _fit(module, max_steps=12)
    assert module.global_step == 12
    assert len(module.guard.first) == 12


def test_guard_rule_median_of_the_first_losses():
    guard = DivergenceGuard(factor=1e3, window=3, min_losses=3)
    for loss in (1.0, 2.0):
        assert guard.problem(loss) is None
    assert guard.problem(5e3) is None  # fewer than 3 losses: no reference yet
    assert guard.reference == 2.0  # median of 1, 2, 5000: one odd loss does not move it
    assert guard.problem(1999.0) is None
    assert guard.problem(2001.0) == (
        "the training loss 2001 exceeds 1000 x 2, the median of the first 3 losses"
    )
    assert guard.first == [1.0, 2.0, 5e3]  # the window is full: later losses never join it
    assert guard.problem(float("inf")) == "the training loss is inf"
    assert guard.problem(float("nan")) == "the training loss is nan"
    default = DivergenceGuard()  # compares from the second loss on
    assert default.problem(0.3) is None and default.problem(400.0) is not None
    assert DivergenceGuard(factor=0).problem(1e30) is None  # factor 0: only NaN / inf


def test_lr_factor_warm_up_then_cosine():
    assert [lr_factor(s, 10, "none", 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    cosine = [lr_factor(s, 10, "cosine", 2) for s in range(11)]
    assert cosine[:3] == [0.5, 1.0, 1.0]
    assert cosine[6] == pytest.approx(0.5)  # half-way through the 8 decay steps
    assert cosine[10] == pytest.approx(0.0)
    assert all(a >= b for a, b in zip(cosine[1:], cosine[2:], strict=False))


class LrLog(pl.Callback):
    """The lr each optimizer step uses, read from ``optimizer.param_groups[0]["lr"]``."""

    def __init__(self):
        self.lrs: list[float] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


@pytest.mark.parametrize("kind", ["localizer", "segmenter"])
def test_cosine_schedule_steps_per_optimizer_step_over_max_steps(kind):
    torch.manual_seed(0)
    options = {"depth": 1, "base_width": 2, "dropout": 0.0, "input_size": SIZE, "lr": 1e-2}
    schedule = {"scheduler": "cosine", "warmup_steps": 2}
    module_class = LocalizerModule if kind == "localizer" else SegmenterModule
    module = module_class(**options, **schedule)
    log = LrLog()
    trainer = _fit(module, max_steps=10, callbacks=[log])
    expected = [1e-2 * lr_factor(s, 10, "cosine", 2) for s in range(10)]
    assert log.lrs == pytest.approx(expected, abs=1e-12)
    assert log.lrs[0] == pytest.approx(5e-3) and log.lrs[6] == pytest.approx(5e-3)
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_without_a_schedule_the_optimizer_is_returned_as_before():
    optimizer = SegmenterModule(depth=1, base_width=2, input_size=SIZE).configure_optimizers()
    assert isinstance(optimizer, torch.optim.Adam)
    log = LrLog()
    _fit(_localizer(lr=1e-3), max_steps=4, callbacks=[log])
    assert log.lrs == [1e-3] * 4


def test_unknown_scheduler_names_the_config_key():
    with pytest.raises(ValueError, match=r"model.scheduler='step'.*none or cosine"):
        _localizer(scheduler="step")
