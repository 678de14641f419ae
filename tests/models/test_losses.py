"""Soft Dice loss and the hard Dice / IoU metrics, checked against hand-computed values."""

import math

import torch

from locseg.models.losses import binary_dice, binary_iou, neg_log_dice_loss, soft_dice


def _square_mask(size=8, lo=2, hi=6):
    mask = torch.zeros(1, 1, size, size)
    mask[..., lo:hi, lo:hi] = 1.0
    return mask


def test_soft_dice_is_one_for_identical_masks_and_per_image():
    mask = torch.cat([_square_mask(), _square_mask(lo=0, hi=3), torch.zeros(1, 1, 8, 8)])
    dice = soft_dice(mask, mask)
    assert dice.shape == (3,)
    torch.testing.assert_close(dice, torch.ones(3))
    assert neg_log_dice_loss(mask, mask).item() == 0.0


def test_soft_dice_matches_the_formula():
    target = _square_mask()  # 16 pixels
    prob = torch.full_like(target, 0.5)  # sum 32, overlap 8
    expected = (2 * 8 + 1.0) / (32 + 16 + 1.0)
    assert math.isclose(soft_dice(prob, target).item(), expected, rel_tol=1e-6)
    assert math.isclose(soft_dice(prob, target, smooth=0.0).item(), 16 / 48, rel_tol=1e-6)


def test_loss_is_minus_log_of_the_batch_mean_dice():
    target = torch.cat([_square_mask(), _square_mask(lo=1, hi=7)])
    prob = torch.rand(target.shape, generator=torch.Generator().manual_seed(0))
    dice = soft_dice(prob, target)
    torch.testing.assert_close(neg_log_dice_loss(prob, target), -torch.log(dice.mean()))


def test_loss_falls_as_the_prediction_improves():
    target = _square_mask()
    wrong = 1.0 - target
    losses = [
        neg_log_dice_loss((1 - a) * wrong + a * target, target).item()
        for a in (0.0, 0.25, 0.5, 0.75, 1.0)
    ]
    assert all(later < earlier for earlier, later in zip(losses, losses[1:], strict=False))
    assert losses[-1] == 0.0


def test_loss_has_a_gradient_towards_the_target():
    target = _square_mask()
    logits = torch.zeros_like(target, requires_grad=True)
    neg_log_dice_loss(torch.sigmoid(logits), target).backward()
    # raising the probability inside the disc lowers the loss; outside it raises it
    assert (logits.grad[target == 1] < 0).all()
    assert (logits.grad[target == 0] > 0).all()


def test_hard_dice_and_iou_values():
    target = _square_mask()  # 4x4
    half = torch.zeros_like(target)
    half[..., 2:6, 2:4] = 0.9  # 8 pixels, all inside
    assert math.isclose(binary_dice(half, target).item(), 2 * 8 / (8 + 16), rel_tol=1e-6)
    assert math.isclose(binary_iou(half, target).item(), 8 / 16, rel_tol=1e-6)
    assert binary_dice(torch.full_like(target, 0.4), target).item() == 0.0  # below threshold
    empty = torch.zeros(2, 1, 4, 4)
    torch.testing.assert_close(binary_dice(empty, empty), torch.ones(2))
    torch.testing.assert_close(binary_iou(empty, empty), torch.ones(2))


def test_gaussian_heatmap_is_a_distribution_centred_on_the_point():
    from locseg.models.losses import gaussian_heatmap
    from locseg.models.unet import soft_argmax

    center = torch.tensor([[0.5, 0.5], [0.3125, 0.6875]])  # cell centres of an 8x8 map
    heatmap = gaussian_heatmap(center, 8, 8, sigma=0.7)
    assert heatmap.shape == (2, 8, 8)
    torch.testing.assert_close(heatmap.sum(dim=(1, 2)), torch.ones(2))
    assert heatmap[1].argmax().item() == 5 * 8 + 2  # row y=5, column x=2
    torch.testing.assert_close(soft_argmax(heatmap), center, atol=2e-3, rtol=0)


def test_js_divergence_is_zero_for_equal_maps_and_at_most_log_two():
    from locseg.models.losses import js_divergence

    p = torch.softmax(torch.randn(3, 16, generator=torch.Generator().manual_seed(0)), dim=1)
    assert js_divergence(p, p).item() < 1e-6
    disjoint_a = torch.zeros(1, 4)
    disjoint_a[0, 0] = 1.0
    disjoint_b = torch.zeros(1, 4)
    disjoint_b[0, 3] = 1.0
    assert math.isclose(js_divergence(disjoint_a, disjoint_b).item(), math.log(2), rel_tol=1e-5)
