"""Soft Dice loss for training and hard Dice / IoU for reporting, all computed per image.

Per image (not pooled over the batch) so a small disc weighs as much as a large one, and so the
test-set numbers can be paired image by image between arms.
"""

from __future__ import annotations

import torch

DEFAULT_SMOOTH = 1.0


def _flat(x: torch.Tensor) -> torch.Tensor:
    """(B, ...) -> (B, N) in float32, so bf16/fp16 autocast does not round the sums."""
    return torch.flatten(x, 1).float()


def soft_dice(
    prob: torch.Tensor, target: torch.Tensor, smooth: float = DEFAULT_SMOOTH
) -> torch.Tensor:
    """Soft Dice per image, shape (B,): (2 sum(p t) + s) / (sum(p) + sum(t) + s).

    ``prob`` are probabilities in [0, 1], ``target`` a {0, 1} mask, both (B, ...). The smoothing
    constant ``s`` (default 1.0, in pixel units) keeps the ratio defined for empty masks (an empty
    prediction of an empty mask scores 1) and softens the gradient when both sums are small.
    """
    p, t = _flat(prob), _flat(target)
    intersection = (p * t).sum(dim=1)
    return (2.0 * intersection + smooth) / (p.sum(dim=1) + t.sum(dim=1) + smooth)


def neg_log_dice_loss(
    prob: torch.Tensor, target: torch.Tensor, smooth: float = DEFAULT_SMOOTH
) -> torch.Tensor:
    """-log(mean over the batch of the per-image soft Dice), smoothing constant ``smooth`` = 1.0.

    Each image's soft Dice runs over all of its pixels (see ``soft_dice``); the loss is 0 for a
    perfect prediction and grows without bound as the Dice goes to 0.
    """
    return -torch.log(soft_dice(prob, target, smooth).mean())


def binary_dice(prob: torch.Tensor, target: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Hard Dice per image (B,) of ``prob > threshold`` vs ``target``; 1 when both are empty."""
    p, t = _flat(prob > threshold), _flat(target > 0.5)
    intersection = (p * t).sum(dim=1)
    total = p.sum(dim=1) + t.sum(dim=1)
    return torch.where(total > 0, 2.0 * intersection / total.clamp_min(1.0), 1.0)


def binary_iou(prob: torch.Tensor, target: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Hard IoU (Jaccard) per image (B,) of ``prob > threshold``; 1 when both are empty."""
    p, t = _flat(prob > threshold), _flat(target > 0.5)
    intersection = (p * t).sum(dim=1)
    union = p.sum(dim=1) + t.sum(dim=1) - intersection
    return torch.where(union > 0, intersection / union.clamp_min(1.0), 1.0)


def gaussian_heatmap(center: torch.Tensor, height: int, width: int, sigma: float) -> torch.Tensor:
    """(B, H, W) normalised Gaussians at normalised (x, y) centres; ``sigma`` in cells."""
    ys = (torch.arange(height, device=center.device, dtype=torch.float32) + 0.5) / height
    xs = (torch.arange(width, device=center.device, dtype=torch.float32) + 0.5) / width
    dx = (xs.view(1, 1, width) - center[:, 0, None, None].float()) * width
    dy = (ys.view(1, height, 1) - center[:, 1, None, None].float()) * height
    logits = -(dx.square() + dy.square()) / (2.0 * sigma**2)
    return torch.softmax(logits.flatten(1), dim=1).view(-1, height, width)


def js_divergence(p: torch.Tensor, q: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Mean over the batch of the Jensen-Shannon divergence between (B, ...) distributions."""
    p, q = torch.flatten(p, 1).float(), torch.flatten(q, 1).float()
    m = 0.5 * (p + q)

    def kl(a: torch.Tensor) -> torch.Tensor:
        return (a * (torch.log(a + eps) - torch.log(m + eps))).sum(dim=1)

    return (0.5 * kl(p) + 0.5 * kl(q)).mean()
