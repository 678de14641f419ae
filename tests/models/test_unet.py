"""U-Net building blocks: shapes, the width contract, paper-scale size, channels_last."""

import pytest
import torch

from locseg.models.unet import (
    Decoder,
    Encoder,
    HeatmapHead,
    LocalizationHead,
    SegmentationHead,
    check_input_size,
    count_parameters,
    localization_head,
    soft_argmax,
)


def test_encoder_shapes_and_contract():
    encoder = Encoder(in_channels=1, depth=3, base_width=8, dropout=0.1)
    bottleneck, skips = encoder(torch.rand(2, 1, 32, 32))
    assert encoder.widths == [8, 16, 32]
    assert encoder.out_channels == 64
    assert bottleneck.shape == (2, 64, 4, 4)
    assert [tuple(s.shape) for s in skips] == [(2, 8, 32, 32), (2, 16, 16, 16), (2, 32, 8, 8)]
    assert encoder.arch == {"in_channels": 1, "depth": 3, "base_width": 8, "dropout": 0.1}


def test_heads_shapes_and_ranges():
    encoder = Encoder(depth=2, base_width=4)
    decoder = Decoder.for_encoder(encoder)
    bottleneck, skips = encoder(torch.randn(3, 1, 32, 32))
    prob = SegmentationHead(decoder.out_channels)(decoder(bottleneck, skips))
    assert prob.shape == (3, 1, 32, 32)
    assert prob.min() >= 0 and prob.max() <= 1
    xy = LocalizationHead(encoder.out_channels, 32 // 4)(bottleneck)
    assert xy.shape == (3, 2)


def test_paper_scale_parameter_count():
    """Depth 4, base 32 (the paper's network) has about 7.8M parameters with the decoder."""
    encoder = Encoder(in_channels=1, depth=4, base_width=32)
    decoder = Decoder.for_encoder(encoder)
    total = sum(count_parameters(m) for m in (encoder, decoder, SegmentationHead(32)))
    assert 7.6e6 < total < 8.0e6, total
    assert encoder.out_channels == 512


def test_channels_last_input_gives_the_same_output():
    torch.manual_seed(0)
    encoder = Encoder(depth=2, base_width=4).eval()
    decoder = Decoder.for_encoder(encoder).eval()
    loc = LocalizationHead(encoder.out_channels, 8).eval()
    x = torch.rand(2, 1, 32, 32)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        b, s = encoder(x)
        b_cl, s_cl = encoder(x_cl)
        torch.testing.assert_close(decoder(b_cl, s_cl), decoder(b, s))
        torch.testing.assert_close(loc(b_cl), loc(b))


def test_input_size_must_divide_by_two_to_the_depth():
    check_input_size(32, 3)
    with pytest.raises(ValueError, match="input_size=30.*2\\*\\*depth=8"):
        check_input_size(30, 3)


def test_soft_argmax_of_a_one_hot_map_is_that_cells_centre():
    heatmap = torch.zeros(2, 4, 8)  # H=4, W=8
    heatmap[0, 1, 5] = 1.0
    heatmap[1, 3, 0] = 1.0
    expected = torch.tensor([[5.5 / 8, 1.5 / 4], [0.5 / 8, 3.5 / 4]])
    torch.testing.assert_close(soft_argmax(heatmap), expected)
    uniform = torch.full((1, 4, 8), 1 / 32)
    torch.testing.assert_close(soft_argmax(uniform), torch.tensor([[0.5, 0.5]]))


def test_heatmap_head_on_a_one_hot_activation_returns_the_cell_centre():
    head = HeatmapHead(in_channels=3)
    with torch.no_grad():
        head.conv.weight.zero_()
        head.conv.weight[0, 1] = 100.0  # only channel 1 matters; softmax of 100 vs 0 is one-hot
        head.conv.bias.zero_()
    features = torch.zeros(1, 3, 6, 6)
    features[0, 1, 4, 2] = 1.0  # row y=4, column x=2
    torch.testing.assert_close(head(features), torch.tensor([[2.5 / 6, 4.5 / 6]]))
    heatmap = head.heatmap(features)
    assert heatmap.shape == (1, 6, 6)
    torch.testing.assert_close(heatmap.sum(), torch.tensor(1.0))


def test_heatmap_head_is_translation_equivariant():
    """A pattern moved by (dx, dy) cells moves the prediction by (dx / W, dy / H)."""
    torch.manual_seed(0)
    head = HeatmapHead(in_channels=4)
    with torch.no_grad():
        head.conv.weight.abs_()
    features = torch.zeros(1, 4, 16, 16)
    features[..., 2:6, 3:7] = 20 + 20 * torch.rand(1, 4, 4, 4)  # outweighs the background
    shifted = torch.roll(features, shifts=(5, 4), dims=(2, 3))  # y + 5 cells, x + 4 cells
    assert head.heatmap(features)[0, 2:6, 3:7].sum() > 1 - 1e-6
    torch.testing.assert_close(
        head(shifted) - head(features), torch.tensor([[4 / 16, 5 / 16]]), atol=1e-5, rtol=0
    )


@pytest.mark.parametrize("kind", ["linear", "heatmap"])
def test_localization_heads_run_in_float32_under_bf16_autocast(kind):
    torch.manual_seed(0)
    head = localization_head(kind, in_channels=16, bottleneck_size=4)
    bottleneck = torch.randn(3, 16, 4, 4)
    reference = head(bottleneck)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = head(bottleneck)
        out_from_bf16 = head(bottleneck.bfloat16())  # what an autocast encoder hands over
    assert out.dtype == torch.float32 and out_from_bf16.dtype == torch.float32
    torch.testing.assert_close(out, reference, atol=1e-6, rtol=0)
    torch.testing.assert_close(
        out_from_bf16, head(bottleneck.bfloat16().float()), atol=1e-6, rtol=0
    )


def test_unknown_head_names_the_config_key():
    with pytest.raises(ValueError, match=r"model.head='conv'.*linear or heatmap"):
        localization_head("conv", 8, 4)
