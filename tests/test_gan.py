import math

import pytest
import torch

from ppgen.infer.checkpoint import load_checkpoint
from ppgen.data.sprites import load_sprites
from ppgen.nn.dcgan import Discriminator, Generator
from ppgen.companions.gan import discriminator_loss, generator_loss, r1_penalty, train_gan

SHAPE = (1, 32, 32)
TINY = dict(z_dim=8, width=4, batch_size=32, lr=1e-3, progress=False)


@pytest.fixture(scope="module")
def data():
    return load_sprites(n=160, seed=0).train[:128]


def _params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_trains_with_finite_losses(data):
    out = train_gan(data, SHAPE, epochs=2, **TINY)
    hist, gen = out["history"], out["generator"]
    assert hist["epoch"] == [1, 2]
    for key in ("d_loss", "g_loss", "d_real", "d_fake"):
        assert len(hist[key]) == 2 and all(math.isfinite(v) for v in hist[key])
    assert all(0 < p < 1 for p in hist["d_real"] + hist["d_fake"])
    x = gen.sample(5)
    assert x.shape == (5, 32 * 32) and x.min() >= 0 and x.max() <= 1
    assert out["discriminator"].features(x).shape == (5, 4 * 4 * 16)


def test_training_changes_both_networks_from_their_seeded_start(data):
    torch.manual_seed(0)  # train_gan seeds before building: the same init as this
    gen0 = Generator(8, SHAPE, (16, 8, 4))
    disc0 = Discriminator(SHAPE, (4, 8, 16))
    out = train_gan(data, SHAPE, epochs=1, **TINY)
    for start, trained in ((gen0, out["generator"]), (disc0, out["discriminator"])):
        before, after = start.state_dict(), trained.state_dict()
        assert before.keys() == after.keys()
        assert any(not torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("kwargs", [dict(spectral_norm=True), dict(gradient_penalty=10.0)])
def test_stabilisers_run(data, kwargs):
    hist = train_gan(data, SHAPE, epochs=1, **TINY, **kwargs)["history"]
    assert all(math.isfinite(v) for v in hist["d_loss"] + hist["g_loss"])


def test_losses_and_penalty_match_their_formulas():
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    sig = torch.sigmoid
    expected_d = -(sig(real).log().mean() + (1 - sig(fake)).log().mean())
    assert torch.allclose(discriminator_loss(real, fake), expected_d)
    assert torch.allclose(generator_loss(fake), -sig(fake).log().mean())
    linear = torch.nn.Linear(3, 1)  # D(x) = w.x + b has gradient w everywhere
    disc = lambda x: linear(x).squeeze(-1)  # noqa: E731
    assert torch.allclose(r1_penalty(disc, torch.randn(4, 3)), linear.weight.pow(2).sum())


def test_checkpoint_resume_is_exact(data, tmp_path):
    full = train_gan(data, SHAPE, epochs=4, seed=3, **TINY)
    path = tmp_path / "gan.pt"
    train_gan(data, SHAPE, epochs=2, seed=3, checkpoint=path, **TINY)
    state = load_checkpoint(path)  # weights_only loading works
    assert state["epoch"] == 2 and {"generator", "discriminator", "opt_g", "opt_d", "rng"} <= state.keys()
    resumed = train_gan(data, SHAPE, epochs=4, seed=3, checkpoint=path, resume=True, **TINY)
    for net in ("generator", "discriminator"):
        a, b = full[net].state_dict(), resumed[net].state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), net
    for key in ("epoch", "d_loss", "g_loss"):
        assert full["history"][key] == resumed["history"][key]
    assert load_checkpoint(path)["epoch"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gan.pt"]  # no temporary files left


def test_resume_refuses_changed_settings_and_missing_file(data, tmp_path):
    path = tmp_path / "gan.pt"
    train_gan(data, SHAPE, epochs=1, checkpoint=path, **TINY)
    with pytest.raises(ValueError, match="z_dim was 8, now 9"):
        train_gan(data, SHAPE, epochs=2, checkpoint=path, resume=True, **{**TINY, "z_dim": 9})
    with pytest.raises(FileNotFoundError):
        train_gan(data, SHAPE, epochs=2, checkpoint=tmp_path / "nope.pt", resume=True, **TINY)


class NaNAfter(Discriminator):
    """A discriminator that turns to NaN after a number of calls (a diverging run)."""

    def __init__(self, calls, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls_left = calls

    def forward(self, x):
        self.calls_left -= 1
        out = super().forward(x)
        return out * float("nan") if self.calls_left < 0 else out


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(data, tmp_path):
    path = tmp_path / "gan.pt"
    disc = NaNAfter(4 * 3 + 1, SHAPE, (4, 8, 16))  # 4 steps x 3 calls in epoch 1, then fail
    with pytest.raises(RuntimeError, match=r"non-finite discriminator loss .* epoch 2, step 1.*epoch 1\) is intact"):
        train_gan(data, SHAPE, epochs=3, checkpoint=path, discriminator=disc, **TINY)
    state = load_checkpoint(path)
    assert state["epoch"] == 1 and state["history"]["epoch"] == [1]
    assert all(torch.isfinite(v).all() for v in state["discriminator"].values())


def test_bad_data_is_rejected(data):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        train_gan(data * 16, SHAPE, epochs=1, **TINY)
    with pytest.raises(ValueError, match="image_shape"):
        train_gan(data[:, :100], SHAPE, epochs=1, **TINY)
    with pytest.raises(ValueError, match="empty"):
        train_gan(data[:0], SHAPE, epochs=1, **TINY)
    with pytest.raises(ValueError, match="flat images"):
        train_gan(data.reshape(-1, *SHAPE), SHAPE, epochs=1, **TINY)
