"""Phase 2: segment the optic disc with a U-Net whose encoder is random or from the localizer.

Three arms share this class: ``init=scratch`` (everything trained from random weights),
``init=localizer`` with ``freeze_encoder=true`` (the paper's transfer: only the decoder and head
learn) and ``init=localizer`` with ``freeze_encoder=false`` (fine-tuning).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torchmetrics import MeanMetric

from locseg.models.encoder_io import EncoderCheckpointError, load_encoder_checkpoint, load_into
from locseg.models.losses import binary_dice, binary_iou, neg_log_dice_loss
from locseg.models.metrics import TrainLossModule, reset_metrics
from locseg.models.unet import Decoder, Encoder, SegmentationHead, check_input_size

INITS = ("scratch", "localizer")
STAGES = ("val", "test")
METRICS = ("loss", "dice", "iou")


class SegmenterModule(TrainLossModule):
    """U-Net -> per-pixel disc probability; loss -log(soft Dice); Adam over trainable weights.

    Batch: ``image`` (B,1,S,S) in [0,1], ``mask`` (B,1,S,S) in {0,1}, ``index`` (B,) long.
    ``freeze_encoder`` only applies to ``init=localizer``: a frozen random encoder is no arm of
    the study, so ``init=scratch`` always trains the whole network.

    The logged ``test/dice`` and ``test/iou`` are means over unique images (keyed by ``index``):
    under DDP the DistributedSampler pads ranks with repeated images, which a running mean would
    count twice while the per-image Dice would not.
    """

    lr_key = "lr.segment"

    def __init__(
        self,
        in_channels: int = 1,
        depth: int = 3,
        base_width: int = 8,
        dropout: float = 0.1,
        lr: float = 1e-3,
        init: str = "scratch",
        encoder_ckpt: str | None = None,
        freeze_encoder: bool = True,
        dice_smooth: float = 1.0,
        input_size: int = 64,
        preprocess: dict | None = None,
        scheduler: str = "none",
        warmup_steps: int = 0,
        divergence_factor: float = 1e3,
    ):
        super().__init__(scheduler, warmup_steps, divergence_factor)
        self.save_hyperparameters()
        if init not in INITS:
            raise ValueError(f"model.init={init!r} is not one of {INITS}")
        check_input_size(input_size, depth)
        self.encoder = Encoder(in_channels, depth, base_width, dropout)
        self.decoder = Decoder.for_encoder(self.encoder)
        self.head = SegmentationHead(self.decoder.out_channels)
        if init == "localizer":
            self._load_encoder(encoder_ckpt, input_size, preprocess)
        self.encoder_frozen = bool(freeze_encoder) and init == "localizer"
        if self.encoder_frozen:
            self.encoder.requires_grad_(False)
            self.encoder.eval()

        self.stage_metrics = nn.ModuleDict(
            {
                stage: nn.ModuleDict({m: MeanMetric(nan_strategy="disable") for m in METRICS})
                for stage in STAGES
            }
        )
        self.test_per_image_dice: dict[int, float] = {}
        self.test_per_image_iou: dict[int, float] = {}
        self._test_index: list[torch.Tensor] = []
        self._test_dice: list[torch.Tensor] = []
        self._test_iou: list[torch.Tensor] = []

    def _load_encoder(self, path: str | None, input_size: int, preprocess: dict | None) -> None:
        if not path:
            raise EncoderCheckpointError(
                "model.init=localizer needs model.encoder_ckpt=PATH/encoder.pt; make one with "
                "`python -m locseg.train +phase=localize data.root=DIR hydra.run.dir=RUN`"
            )
        ckpt = load_encoder_checkpoint(path)
        # {} stands for "no preprocessing options", so a None here is still checked.
        load_into(self.encoder, ckpt, input_size=input_size, preprocess=preprocess or {})

    # ------------------------------------------------------------------ frozen means frozen

    def train(self, mode: bool = True) -> SegmenterModule:
        """Lightning switches the whole module to train mode; a frozen encoder stays in eval, so
        its batch-norm running statistics (and dropout) never change."""
        super().train(mode)
        if getattr(self, "encoder_frozen", False):
            self.encoder.eval()
        return self

    def on_train_epoch_start(self) -> None:
        if self.encoder_frozen:
            self.encoder.eval()

    # ------------------------------------------------------------------ forward and steps

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        bottleneck, skips = self.encoder(image)
        return self.head(self.decoder(bottleneck, skips))

    def _loss(self, prob: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return neg_log_dice_loss(prob, mask, smooth=self.hparams.dice_smooth)

    def batch_loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self._loss(self(batch["image"]), batch["mask"])

    def _eval_step(self, batch: Mapping[str, torch.Tensor], stage: str) -> dict:
        prob = self(batch["image"])
        loss = self._loss(prob, batch["mask"])
        dice = binary_dice(prob.detach(), batch["mask"])
        iou = binary_iou(prob.detach(), batch["mask"])
        metrics = self.stage_metrics[stage]
        metrics["loss"].update(loss.detach(), weight=prob.shape[0])
        metrics["dice"].update(dice)
        metrics["iou"].update(iou)
        if stage == "test":
            self._test_index.append(batch["index"].detach().view(-1))
            self._test_dice.append(dice)
            self._test_iou.append(iou)
        return {"loss": loss, "pred": prob.detach()}

    def _log_stage(self, stage: str, overrides: Mapping[str, float] | None = None) -> None:
        """Log the epoch means, or the given values in place of some of them."""
        overrides = overrides or {}
        metrics = self.stage_metrics[stage]
        for name, metric in metrics.items():
            value = overrides.get(name)
            self.log(f"{stage}/{name}", metric.compute() if value is None else value)
        reset_metrics(*metrics.values())

    def validation_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> dict:
        return self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_stage("val")

    def on_test_epoch_start(self) -> None:
        self.test_per_image_dice, self.test_per_image_iou = {}, {}
        self._test_index, self._test_dice, self._test_iou = [], [], []

    def test_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> dict:
        return self._eval_step(batch, "test")

    def _gather_per_image(self, values: list[torch.Tensor]) -> dict[int, float]:
        """{index: value} over every rank; an index seen twice (a padded repeat) counts once."""
        index, value = torch.cat(self._test_index), torch.cat(values)
        if self.trainer.world_size > 1:
            index, value = self.all_gather(index).view(-1), self.all_gather(value).view(-1)
        pairs = zip(index.cpu().tolist(), value.cpu().tolist(), strict=True)
        return {int(i): float(v) for i, v in pairs}

    def on_test_epoch_end(self) -> None:
        overrides = {}
        if self._test_index:
            self.test_per_image_dice = self._gather_per_image(self._test_dice)
            self.test_per_image_iou = self._gather_per_image(self._test_iou)
            # Every rank holds the same gathered dicts, so every rank logs the same means.
            overrides = {
                "dice": sum(self.test_per_image_dice.values()) / len(self.test_per_image_dice),
                "iou": sum(self.test_per_image_iou.values()) / len(self.test_per_image_iou),
            }
        self._log_stage("test", overrides)
        self._test_index, self._test_dice, self._test_iou = [], [], []

    def predict_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        """(B, 1, S, S) disc probabilities."""
        image = batch["image"] if isinstance(batch, Mapping) else batch
        return self(image)

    def configure_optimizers(self):
        trainable = [p for p in self.parameters() if p.requires_grad]
        return self.with_schedule(torch.optim.Adam(trainable, lr=self.hparams.lr))
