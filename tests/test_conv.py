import pytest
import torch
from torch.nn.utils import parametrize

from ppgen.nn.conv import ConvEncoder, DeconvDecoder, spatial_plan
from ppgen.likelihoods import Categorical

SHAPES = [(1, 8, 8), (1, 28, 28), (1, 32, 32), (3, 64, 64)]
SMALL = dict(channels=(4, 8, 8, 8))


@pytest.mark.parametrize("shape, plan", [((1, 8, 8), (1, 4, 4)), ((1, 28, 28), (2, 7, 7)),
                                         ((1, 32, 32), (3, 4, 4)), ((3, 64, 64), (4, 4, 4)),
                                         ((1, 32, 64), (3, 4, 8))])
def test_spatial_plan(shape, plan):
    assert spatial_plan(shape) == plan


@pytest.mark.parametrize("shape", SHAPES)
def test_encoder_decoder_shapes_with_leading_dims(shape):
    torch.manual_seed(0)
    d = shape[0] * shape[1] * shape[2]
    enc = ConvEncoder(shape, 6, **SMALL)
    dec = DeconvDecoder(5, shape, channels=(8, 8, 8, 4))
    x = torch.rand(2, 3, d)
    assert enc(x).shape == (2, 3, 6)
    assert enc(x[0, 0]).shape == (6,)  # no batch dims at all
    z = torch.randn(4, 2, 3, 5)
    assert dec(z).shape == (4, 2, 3, d)
    assert enc(dec(z[0])).shape == (2, 3, 6)  # round trip through image space
    # folding the leading dims must not mix datapoints
    assert torch.allclose(enc(x)[1, 2], enc(x[1, 2:3])[0], atol=1e-6)


def test_round_trip_32_and_64_gradients_flow():
    for size in (32, 64):
        shape = (1, size, size)
        enc, dec = ConvEncoder(shape, 3, **SMALL), DeconvDecoder(3, shape, channels=(8, 4))
        loss = enc(torch.sigmoid(dec(torch.randn(2, 3)))).pow(2).sum()
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in [*enc.parameters(), *dec.parameters()])


def test_decoder_layout_puts_a_pixels_parameters_together():
    torch.manual_seed(1)
    shape, k = (2, 8, 8), 3
    dec = DeconvDecoder(4, shape, out_channels_per_pixel=k, channels=(4,))
    z = torch.randn(5, 4)
    raw = dec(z)
    assert raw.shape == (5, 2 * 8 * 8 * k)
    maps = dec.body(dec.stem(z).reshape(-1, *dec.start))  # [B, C*k, H, W], channel c*k + j
    c, h, w, j = 1, 6, 2, 2
    assert torch.equal(raw[:, ((c * 8 + h) * 8 + w) * k + j], maps[:, c * k + j, h, w])
    # a categorical likelihood reading raw as [..., x_dim, levels] gets one pixel per row
    lik = Categorical(x_dim=2 * 8 * 8, levels=k)
    x = torch.randint(0, k, (5, 2 * 8 * 8)).float()
    assert lik(raw).log_prob(x).shape == (5,)
    logits = raw.reshape(5, -1, k)
    assert torch.equal(logits[:, (c * 8 + h) * 8 + w], maps[:, c * k:(c + 1) * k, h, w])


def test_spectral_norm_flag_parametrizes_every_layer():
    enc = ConvEncoder((1, 32, 32), 1, channels=(4, 8), hidden=16, spectral_norm=True)
    layers = [m for m in enc.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert len(layers) == 5 and all(parametrize.is_parametrized(m, "weight") for m in layers)
    assert not any(parametrize.is_parametrized(m) for m in ConvEncoder((1, 32, 32), 1).modules())
    assert enc.feature_dim == 16 and enc.features(torch.rand(3, 1024)).shape == (3, 16)


@pytest.mark.parametrize("shape", [(1, 7, 7), (1, 6, 6), (1, 9, 16), (32, 32)])
def test_unsupported_image_shapes_are_rejected(shape):
    with pytest.raises(ValueError, match="not supported|image_shape"):
        ConvEncoder(shape, 2)
    with pytest.raises(ValueError, match="not supported|image_shape"):
        DeconvDecoder(2, shape)


def test_wrong_input_size_names_the_channels():
    enc = ConvEncoder((1, 32, 32), 2, channels=(4,))
    with pytest.raises(ValueError, match="3 channel"):
        enc(torch.rand(2, 3 * 32 * 32))
    with pytest.raises(ValueError, match="expects flat images"):
        enc(torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"inputs \[\.\.\., 5\]"):
        DeconvDecoder(5, (1, 32, 32))(torch.rand(2, 4))
    with pytest.raises(ValueError, match="out_channels_per_pixel"):
        DeconvDecoder(5, (1, 32, 32), out_channels_per_pixel=0)
