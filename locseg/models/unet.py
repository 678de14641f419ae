"""U-Net pieces as plain ``nn.Module``s: the encoder is shared by both phases, the heads are not.

The encoder is the thing transferred from localization to segmentation, so its parameter names
and shapes are a contract (see ``encoder_io``): change them and old ``encoder.pt`` files stop
loading.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """Two (3x3 conv, batch-norm, ReLU); the conv has no bias because batch-norm adds one."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def check_input_size(input_size: int, depth: int) -> None:
    """Every pooling step halves the image, so the side must divide by 2**depth."""
    factor = 2**depth
    if input_size <= 0 or input_size % factor:
        suggestion = max(factor, input_size // factor * factor)
        raise ValueError(
            f"input_size={input_size} must be a positive multiple of 2**depth={factor} "
            f"(depth={depth}); choose e.g. data.image_size={suggestion} or a smaller net.depth"
        )


class Encoder(nn.Module):
    """Contracting arm: ``depth`` levels of conv block + 2x2 max-pool + dropout, then a bottleneck.

    ``forward`` returns the bottleneck features and the pre-pool features of each level (the skips),
    shallowest first.
    """

    def __init__(
        self, in_channels: int = 1, depth: int = 3, base_width: int = 8, dropout: float = 0.1
    ):
        super().__init__()
        if depth < 1 or base_width < 1 or in_channels < 1:
            raise ValueError(
                f"Encoder needs depth>=1, base_width>=1, in_channels>=1; "
                f"got depth={depth}, base_width={base_width}, in_channels={in_channels}"
            )
        self.in_channels = int(in_channels)
        self.depth = int(depth)
        self.base_width = int(base_width)
        self.dropout = float(dropout)
        self.widths = [self.base_width * 2**i for i in range(self.depth)]
        self.out_channels = self.base_width * 2**self.depth

        channels = [self.in_channels, *self.widths]
        self.levels = nn.ModuleList(
            conv_block(c_in, c_out) for c_in, c_out in zip(channels[:-1], channels[1:], strict=True)
        )
        self.pool = nn.MaxPool2d(2)
        self.drop = nn.Dropout2d(self.dropout)
        self.bottleneck = conv_block(self.widths[-1], self.out_channels)

    @property
    def arch(self) -> dict:
        """What it takes to rebuild this encoder: stored in ``encoder.pt`` and compared on load."""
        return {
            "in_channels": self.in_channels,
            "depth": self.depth,
            "base_width": self.base_width,
            "dropout": self.dropout,
        }

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = []
        for level in self.levels:
            x = level(x)
            skips.append(x)
            x = self.drop(self.pool(x))
        return self.bottleneck(x), skips


class Decoder(nn.Module):
    """Expanding arm: per level, upsample x2, concatenate the encoder skip, conv block.

    ``skip_widths`` are the encoder's ``widths`` (shallowest first); ``in_channels`` its
    ``out_channels``. The output has ``skip_widths[0]`` channels at full resolution.
    """

    def __init__(self, skip_widths: Sequence[int], in_channels: int):
        super().__init__()
        self.skip_widths = [int(w) for w in skip_widths]
        self.out_channels = self.skip_widths[0]
        ups, blocks = [], []
        channels = int(in_channels)
        for width in reversed(self.skip_widths):
            ups.append(nn.ConvTranspose2d(channels, width, kernel_size=2, stride=2))
            blocks.append(conv_block(2 * width, width))
            channels = width
        self.ups = nn.ModuleList(ups)
        self.blocks = nn.ModuleList(blocks)

    @classmethod
    def for_encoder(cls, encoder: Encoder) -> Decoder:
        return cls(encoder.widths, encoder.out_channels)

    def forward(self, x: torch.Tensor, skips: Sequence[torch.Tensor]) -> torch.Tensor:
        for up, block, skip in zip(self.ups, self.blocks, reversed(skips), strict=True):
            x = block(torch.cat([up(x), skip], dim=1))
        return x


def float32_region(x: torch.Tensor):
    """Autocast off: a head's few FLOPs in bf16 would round the centre to ~1/256 of the image
    (about 3 px at 2000 px width), so heads and the localization loss run in float32."""
    return torch.autocast(device_type=x.device.type, enabled=False)


class LocalizationHead(nn.Module):
    """Flatten the bottleneck and map it linearly to (x, y); no activation (plain regression).

    The paper's head. It computes in float32 even under bf16/fp16 autocast (see
    ``float32_region``).
    """

    def __init__(self, in_channels: int, bottleneck_size: int):
        super().__init__()
        self.linear = nn.Linear(in_channels * bottleneck_size * bottleneck_size, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # torch.flatten copies when needed, so channels_last input is fine (view() would not be).
        with float32_region(x):
            weight, bias = self.linear.weight.float(), self.linear.bias.float()
            return F.linear(torch.flatten(x, 1).float(), weight, bias)


def cell_centres(n: int, device=None) -> torch.Tensor:
    """Normalised centres (i + 0.5) / n of the n cells of one axis: the data's pixel convention."""
    return (torch.arange(n, device=device, dtype=torch.float32) + 0.5) / n


def soft_argmax(heatmap: torch.Tensor) -> torch.Tensor:
    """Expected (x, y) in [0, 1] of a (B, H, W) probability map, each cell at its centre."""
    _, height, width = heatmap.shape
    x = (heatmap.sum(dim=1) * cell_centres(width, heatmap.device)).sum(dim=1)
    y = (heatmap.sum(dim=2) * cell_centres(height, heatmap.device)).sum(dim=1)
    return torch.stack([x, y], dim=1)


class HeatmapHead(nn.Module):
    """DSNT (Nibali et al. 2018): 1x1 conv to one heat map, spatial softmax, soft-argmax.

    Translation-equivariant (a shifted disc shifts the map, hence the expectation) and free of
    any size-dependent weight, unlike the flatten + linear head. Runs in float32.
    """

    def __init__(self, in_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 1, kernel_size=1)

    def heatmap(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) features -> (B, H, W) probabilities summing to 1 per image (float32)."""
        with float32_region(x):
            weight, bias = self.conv.weight.float(), self.conv.bias.float()
            logits = F.conv2d(x.float(), weight, bias)[:, 0]
            batch, height, width = logits.shape
            return torch.softmax(logits.reshape(batch, -1), dim=1).view(batch, height, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with float32_region(x):
            return soft_argmax(self.heatmap(x))


HEADS = ("linear", "heatmap")


def localization_head(kind: str, in_channels: int, bottleneck_size: int) -> nn.Module:
    """The head named by ``model.head``."""
    if kind == "linear":
        return LocalizationHead(in_channels, bottleneck_size)
    if kind == "heatmap":
        return HeatmapHead(in_channels)
    raise ValueError(f"model.head={kind!r} is not one of {HEADS}; set model.head=linear or heatmap")


class SegmentationHead(nn.Module):
    """1x1 conv to one channel, then sigmoid: per-pixel disc probabilities."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 1, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.conv(x))


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
