"""U-Net building blocks: shapes, the width contract, paper-scale size, channels_last."""

import pytest
import torch

from locseg.models.unet import (
    Decoder,
    Encoder,
    LocalizationHead,
    SegmentationHead,
    check_input_size,
    count_parameters,
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
