"""The conv VAE is a Pyro model/guide pair like the MLP VAE: priors swap by assignment, every
amortized guide takes the conv encoder, and it trains on digits (categorical) and sprites."""
import math

import pytest
import torch

from ppgen import priors
from ppgen.data import as_dataset
from ppgen.data.sprites import load_sprites
from ppgen.evaluate import evaluate
from ppgen.guides import GUIDES, check_sites
from ppgen.infer import fit
from ppgen.models import MODELS, ConvVAE
from ppgen.nn.conv import conv_encoder
from ppgen.guides.amortized import conv_guide
from ppgen.runs import conv_vae as runner

AMORTIZED = ["diag_normal", "lowrank_normal", "iaf", "spike_and_slab"]


@pytest.fixture(scope="module")
def sprites():
    return load_sprites(n=300, seed=0)


def test_registered_and_shaped(digits, sprites):
    assert MODELS["conv_vae"] is ConvVAE
    for data, k in ((digits, 17), (sprites, 1)):
        vae = ConvVAE.for_data(data, z_dim=4, width=4)
        z = torch.randn(3, 2, 4)  # leading dims of importance samples pass through
        assert vae.decoder(z).shape == (3, 2, data.x_dim * k)
        assert vae.likelihood.out_features == data.x_dim * k
        x = vae.sample(5)
        assert x.shape == (5, data.x_dim) and torch.isfinite(x).all()
        assert 0 <= vae.images(torch.randn(5, 4)).min() and vae.images(torch.randn(5, 4)).max() <= 1


def test_decoder_treats_each_datapoint_alone(sprites):
    """No batch norm: p(x|z_n) must not depend on the other codes in the batch."""
    vae = ConvVAE.for_data(sprites, z_dim=4, width=4)
    z = torch.randn(6, 4)
    assert torch.allclose(vae.decoder(z)[:1], vae.decoder(z[:1]), atol=1e-6)


@pytest.mark.parametrize("guide_name", AMORTIZED)
def test_every_amortized_guide_takes_the_conv_encoder_and_trains(guide_name, digits):
    torch.manual_seed(0)
    prior = priors.SpikeAndSlab(4) if guide_name == "spike_and_slab" else priors.StandardNormal(4)
    vae = ConvVAE.for_data(digits, z_dim=4, width=8, hidden=32, prior=prior)
    guide = conv_guide(GUIDES[guide_name], vae)
    assert type(guide) is GUIDES[guide_name]
    assert any(type(m).__name__ == "ConvEncoder" for m in guide.modules())
    assert check_sites(vae, guide, digits.train[:2]) == ["z"]
    hist = fit(vae, guide, digits.train[:128], epochs=15, batch_size=64, lr=3e-3, device="cpu", progress=False)
    losses = torch.tensor(hist.step_loss)
    assert torch.isfinite(losses).all()
    assert losses[-4:].mean() < losses[:4].mean() - 10.0


def test_prior_swaps_by_assignment(digits):
    vae = ConvVAE.for_data(digits, z_dim=4, width=4, hidden=16)
    guide = conv_guide(GUIDES["diag_normal"], vae)
    vae.prior = priors.Laplace(4)
    check_sites(vae, guide, digits.train[:2])
    metrics = evaluate(vae, guide, digits.test[:20], k=10)
    assert math.isfinite(metrics["test_elbo_nats"]) and metrics["test_iwae_nats"] < 0


def test_conv_encoder_scales_counts_and_keeps_leading_dims():
    enc = conv_encoder((1, 8, 8), hidden=16, width=4, input_scale=16.0)
    assert enc.out_features == 16
    x = torch.randint(0, 17, (3, 2, 64)).float()
    out = enc(x)
    assert out.shape == (3, 2, 16)
    torch.testing.assert_close(out, enc[1:](x / 16.0))  # the first layer divides the counts by 16


def test_runner_builds_from_registry_names(digits, sprites):
    model, guide = runner.build({"model": "conv_vae", "prior": "spike_and_slab", "z_dim": 4, "hidden": 16, "width": 4},
                                sprites)
    assert isinstance(model, ConvVAE) and model.prior.name == "spike_and_slab"
    assert type(guide) is GUIDES["spike_and_slab"]  # the default pairing for that prior
    model, guide = runner.build({"model": "conv_vae", "guide": "iaf", "z_dim": 4, "hidden": 16, "width": 4}, digits)
    assert type(guide) is GUIDES["iaf"]
    metrics = runner.metrics(model, guide, digits, k=5)
    assert "mig" not in metrics  # digit classes are not a factor matrix
    model, guide = runner.build({"model": "conv_vae", "z_dim": 4, "hidden": 16, "width": 4}, sprites)
    metrics = runner.metrics(model, guide, sprites, k=5)
    assert 0.0 <= metrics["mig"] <= 1.0


def test_bad_inputs_name_the_problem(digits, sprites):
    with pytest.raises(ValueError, match="needs image data with an image_shape"):
        ConvVAE.for_data(as_dataset(torch.rand(50, 10)), z_dim=2)
    with pytest.raises(ValueError, match="does not match x_dim"):
        ConvVAE(64, 4, image_shape=(1, 16, 16))
    with pytest.raises(ValueError, match="height and width must be even and at least 8"):
        ConvVAE(36, 4, image_shape=(1, 6, 6))
    vae = ConvVAE.for_data(sprites, z_dim=4, width=4)
    with pytest.raises(ValueError, match=r"expects data of shape \[N, 1024\]"):
        vae.check_data(digits.train[:4])  # 8x8 images into a 32x32 model
    with pytest.raises(ValueError, match="outside the support"):
        vae.check_data(sprites.train[:4] * 3)
    with pytest.raises(ValueError, match="2 channel"):  # two-channel images into a one-channel encoder
        conv_guide(GUIDES["diag_normal"], vae).encoder(torch.rand(2, 2 * 1024))
    with pytest.raises(ValueError, match="not an amortized guide"):
        conv_guide(GUIDES["vrnn_filtering"], vae)
    with pytest.raises(ValueError, match="unknown guide"):
        runner.build({"model": "conv_vae", "guide": "nope"}, sprites)
    with pytest.raises(ValueError, match="is empty"):
        fit(vae, conv_guide(GUIDES["diag_normal"], vae), sprites.train[:0], epochs=1, progress=False, device="cpu")
