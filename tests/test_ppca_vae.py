"""Closed-form check: a VAE with a linear-Gaussian decoder and a N(0, I) prior is probabilistic
PCA, whose exact marginal log-likelihood and maximum-likelihood solution are known."""
import pytest
import torch
from torch import nn

from ppgen.evaluate import iwae_log_likelihood
from ppgen.evaluate import test_elbo as heldout_elbo
from ppgen.guides import DiagonalNormalGuide
from ppgen.infer import fit
from ppgen.models import VAE
from ppgen.guides.ppca import ExactPPCAGuide
from ppgen.models.ppca import ppca_log_likelihood, ppca_mle

D, Q, N = 6, 2, 2000


def ppca_data():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(D, Q, generator=g) * 1.5
    z = torch.randn(N, Q, generator=g)
    x = z @ W.T + 0.5 * torch.randn(N, D, generator=g) + torch.linspace(-1, 1, D)
    return x[:1500], x[1500:]


def train_ppca_vae(encoder=None, **settings):
    train, test = ppca_data()
    torch.manual_seed(0)
    vae = VAE(D, Q, decoder=nn.Linear(Q, D), likelihood="normal", likelihood_kwargs={"scale": "isotropic"})
    guide = DiagonalNormalGuide.for_model(vae, hidden=64, encoder=encoder)
    fit(vae, guide, train, lr_schedule="cosine", progress=False, device="cpu", **settings)
    return vae, guide, train, test


@pytest.fixture(scope="module")
def trained():
    """The default amortized guide (an MLP encoder): its amortization gap keeps the ELBO visibly
    below log p(x)."""
    return train_ppca_vae(epochs=150, batch_size=150, lr=1e-2)


@pytest.fixture(scope="module")
def trained_linear():
    """A linear encoder holds the exact posterior family (at the MLE, PPCA's posterior
    covariance is diagonal and its mean linear in x), so the ELBO's optimum is the MLE."""
    encoder = nn.Identity()
    encoder.out_features = D
    return train_ppca_vae(encoder, epochs=200, batch_size=300, lr=3e-2, num_particles=4)


def exact(vae, x):
    W, mu = vae.decoder.weight.detach(), vae.decoder.bias.detach()
    sigma2 = vae.likelihood(mu).base_dist.scale[0].detach() ** 2
    return ppca_log_likelihood(x, W, mu, sigma2)


def test_elbo_below_exact_and_iwae_in_between(trained):
    vae, guide, _, test = trained
    log_px = exact(vae, test)
    elbo = heldout_elbo(vae, guide, test, num_samples=50)
    iwae = iwae_log_likelihood(vae, guide, test, k=500)
    mc_error = (iwae - log_px).std() / len(test) ** 0.5
    assert elbo < log_px.mean() - 3 * mc_error  # a strict lower bound, visibly so
    assert elbo - 3 * mc_error <= iwae.mean() <= log_px.mean() + 3 * mc_error
    # the IWAE bound tightens the gap substantially
    assert (log_px.mean() - iwae.mean()) < 0.5 * (log_px.mean() - elbo)


def test_trained_model_reaches_maximum_likelihood(trained_linear):
    vae, _, train, _ = trained_linear
    W, mu, sigma2 = ppca_mle(train, Q)
    best = ppca_log_likelihood(train, W, mu, sigma2).mean()
    ours = exact(vae, train).mean()
    assert ours <= best + 1e-3  # nothing beats the MLE on its own data
    assert best - ours < 0.02, (float(best), float(ours))


def test_exact_posterior_guide_makes_iwae_exact(trained):
    vae, _, _, test = trained
    log_px = exact(vae, test)
    estimate = iwae_log_likelihood(vae, ExactPPCAGuide(vae), test, k=10)
    torch.testing.assert_close(estimate, log_px, atol=1e-3, rtol=1e-4)
