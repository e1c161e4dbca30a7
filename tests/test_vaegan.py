"""The VAE-GAN: a Pyro model/guide pair plus a discriminator, trained by one short loop."""
import math

import pyro
import pytest
import torch

from ppgen.infer.checkpoint import load_checkpoint
from ppgen.data.sprites import load_sprites
from ppgen.nn.dcgan import Discriminator
from ppgen.guides import GUIDES, check_sites
from ppgen.models import MODELS, ConvVAE, VAEGAN
from ppgen.guides.amortized import conv_guide
from ppgen.companions.vaegan import VAEGANConfig, decode_fakes, train_vaegan, vae_loss, vaegan_step
from ppgen.infer.objectives import TraceELBO

TINY = dict(batch_size=32, lr=1e-3, progress=False, device="cpu")


@pytest.fixture(scope="module")
def sprites():
    return load_sprites(n=120, seed=0)


def build(data, seed=0, **kwargs):
    torch.manual_seed(seed)
    model = VAEGAN.for_data(data, z_dim=4, width=4, hidden=16, **kwargs)
    return model, conv_guide(GUIDES["diag_normal"], model)


def _state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_is_the_conv_vae_pair_plus_a_discriminator(sprites):
    model, guide = build(sprites)
    assert MODELS["vaegan"] is VAEGAN and isinstance(model, ConvVAE)
    assert check_sites(model, guide, sprites.train[:2]) == ["z"]
    d_params = {id(p) for p in model.discriminator.parameters()}
    assert d_params and not d_params & {id(p) for p in model.vae_parameters()}
    assert len(model.vae_parameters()) + len(d_params) == len(list(model.parameters()))


@pytest.mark.parametrize("weights", [dict(adversarial_weight=1.0), dict(adversarial_weight=0.5, feature_weight=0.1),
                                     dict(gradient_penalty=1.0)])
def test_trains_a_few_steps_with_finite_losses(sprites, weights):
    model, guide = build(sprites)
    before_vae, before_d, before_q = _state(model.decoder), _state(model.discriminator), _state(guide)
    out = train_vaegan(model, guide, sprites.train, sprites.val, epochs=2, **TINY, **weights)
    hist = out["history"]
    assert hist["epoch"] == [1, 2] and len(hist["val_elbo"]) == 2
    for key in ("neg_elbo", "adversarial", "feature", "d_loss", "d_real", "d_fake", "val_elbo"):
        assert all(math.isfinite(v) for v in hist[key]), key
    assert hist["neg_elbo"][-1] < hist["neg_elbo"][0]
    assert (hist["feature"][-1] > 0) == bool(weights.get("feature_weight"))
    for before, after in ((before_vae, model.decoder), (before_d, model.discriminator), (before_q, guide)):
        assert any(not torch.equal(v, after.state_dict()[k]) for k, v in before.items())


def test_loss_is_the_elbo_plus_the_weighted_adversarial_terms(sprites):
    """vae_loss is -ELBO/N (the Pyro objective) + w_adv * adversarial + w_feat * feature."""
    model, guide = build(sprites)
    x = sprites.train[:16]
    objective = TraceELBO()
    z_q, fakes = decode_fakes(model, guide, x)
    assert fakes.shape == (32, 1024) and 0 <= fakes.min() and fakes.max() <= 1  # reconstructions + prior draws
    cfg = VAEGANConfig(adversarial_weight=3.0, feature_weight=100.0)  # the feature term is small at init
    pyro.set_rng_seed(1)
    loss, parts = vae_loss(model, guide, x, z_q, fakes, objective, cfg)
    assert loss.item() == pytest.approx(float(parts["neg_elbo"] + 3.0 * parts["adversarial"] + 100.0 * parts["feature"]),
                                        rel=1e-5)
    pyro.set_rng_seed(1)
    plain, plain_parts = vae_loss(model, guide, x, z_q, fakes, objective, VAEGANConfig(adversarial_weight=0.0))
    assert plain.item() == pytest.approx(float(parts["neg_elbo"]), rel=1e-6) and set(plain_parts) == {"neg_elbo"}
    pyro.set_rng_seed(1)
    assert plain.item() == pytest.approx(objective(model, guide, x).item() / 16, rel=1e-6)


def test_adversarial_term_reaches_the_decoder_but_not_the_guide_or_d(sprites):
    model, guide = build(sprites)
    x = sprites.train[:16]

    def grads(weight):
        model.zero_grad(), guide.zero_grad()
        pyro.set_rng_seed(2)
        z_q, fakes = decode_fakes(model, guide, x)
        vae_loss(model, guide, x, z_q, fakes, TraceELBO(), VAEGANConfig(adversarial_weight=weight))[0].backward()
        return ({k: p.grad.clone() for k, p in guide.named_parameters()},
                {k: p.grad.clone() for k, p in model.decoder.named_parameters()})

    (q0, dec0), (q1, dec1) = grads(0.0), grads(5.0)
    assert all(torch.allclose(q0[k], q1[k]) for k in q0)
    assert any(not torch.allclose(dec0[k], dec1[k]) for k in dec0)

    d_before = _state(model.discriminator)
    opt_vae = torch.optim.SGD(model.vae_parameters() + list(guide.parameters()), lr=1e-3)
    opt_d = torch.optim.SGD(model.discriminator.parameters(), lr=0.0)  # D's own update does nothing
    parts = vaegan_step(model, guide, x, TraceELBO(), opt_vae, opt_d, VAEGANConfig(adversarial_weight=5.0))
    assert {"neg_elbo", "adversarial", "d_loss", "d_real", "d_fake"} <= parts.keys()
    assert all(torch.equal(v, model.discriminator.state_dict()[k]) for k, v in d_before.items())
    assert all(p.requires_grad for p in model.discriminator.parameters())  # unfrozen again after the VAE update


def test_checkpoint_resume_is_exact(sprites, tmp_path):
    model, guide = build(sprites)
    full = train_vaegan(model, guide, sprites.train, epochs=3, seed=3, **TINY)
    path = tmp_path / "vaegan.pt"
    model, guide = build(sprites)
    train_vaegan(model, guide, sprites.train, epochs=1, seed=3, checkpoint=path, **TINY)
    state = load_checkpoint(path)
    assert state["epoch"] == 1 and {"model", "guide", "opt_vae", "opt_d", "rng", "config"} <= state.keys()
    model, guide = build(sprites, seed=99)  # other initial weights: resume must restore them all
    resumed = train_vaegan(model, guide, sprites.train, epochs=3, seed=3, checkpoint=path, resume=True, **TINY)
    for net in ("model", "guide"):
        a, b = full[net].state_dict(), resumed[net].state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), net
    assert full["history"]["neg_elbo"] == resumed["history"]["neg_elbo"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vaegan.pt"]
    with pytest.raises(ValueError, match="adversarial_weight was 10.0, now 2.0"):
        train_vaegan(model, guide, sprites.train, epochs=4, seed=3, checkpoint=path, resume=True,
                     adversarial_weight=2.0, **TINY)


class NaNAfter(Discriminator):
    """A discriminator that turns to NaN after a number of calls (a diverging run)."""

    def __init__(self, calls, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls_left = calls

    def forward(self, x):
        self.calls_left -= 1
        out = super().forward(x)
        return out * float("nan") if self.calls_left < 0 else out


def test_non_finite_loss_stops_with_the_last_checkpoint_intact(sprites, tmp_path):
    path = tmp_path / "vaegan.pt"
    steps = math.ceil(sprites.train.shape[0] / 32)
    model, guide = build(sprites, discriminator=NaNAfter(3 * steps, (1, 32, 32), (4, 8, 16, 32)))
    with pytest.raises(RuntimeError, match=r"non-finite discriminator loss .* epoch 2, step 1.*epoch 1\) is intact"):
        train_vaegan(model, guide, sprites.train, epochs=3, checkpoint=path, **TINY)
    state = load_checkpoint(path)
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_bad_inputs_are_rejected(sprites, digits):
    model, guide = build(sprites)
    with pytest.raises(ValueError, match=r"training data: .*expects data of shape \[N, 1024\]"):
        train_vaegan(model, guide, digits.train[:64], epochs=1, **TINY)  # 8x8 images, 32x32 model
    with pytest.raises(ValueError, match="outside the support"):
        train_vaegan(model, guide, sprites.train * 2, epochs=1, **TINY)  # not binary
    with pytest.raises(ValueError, match="training data is empty"):
        train_vaegan(model, guide, sprites.train[:0], epochs=1, **TINY)
    with pytest.raises(ValueError, match=r"validation data: .*expects data"):
        train_vaegan(model, guide, sprites.train, sprites.val[:, :100], epochs=1, **TINY)
    with pytest.raises(ValueError, match="must be >= 0"):
        train_vaegan(model, guide, sprites.train, epochs=1, adversarial_weight=-1.0, **TINY)
    with pytest.raises(TypeError, match="trains a VAEGAN"):
        plain = ConvVAE.for_data(sprites, z_dim=4, width=4)
        train_vaegan(plain, conv_guide(GUIDES["diag_normal"], plain), sprites.train, epochs=1, **TINY)
    with pytest.raises(ValueError, match="2 channel"):  # a two-channel image into the one-channel discriminator
        model.discriminator(torch.rand(3, 2 * 32 * 32))
