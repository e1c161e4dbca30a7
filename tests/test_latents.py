"""The one set of latent metrics (ppgen.evaluate.latents): active units against an independent
Monte Carlo estimate, for a guide with an exact mean and for a flow without one, and the same
numbers through evaluate() and through the diagnostics' InferenceData."""
import pyro
import pyro.distributions as dist
import pytest
import torch

from ppgen import diagnostics as D
from ppgen import priors
from ppgen.evaluate import evaluate, latents
from ppgen.guides import DiagonalNormalGuide, IAFGuide
from ppgen.models import VAE

ACTIVE = 4  # dims 0..3 of q's location vary strongly with x, dims 4..7 not at all


def guide_with_known_activity(digits, guide_cls):
    torch.manual_seed(1)
    model = VAE.for_data(digits, 8, hidden=32)
    guide = guide_cls.for_model(model, hidden=32)
    with torch.no_grad():
        guide.head.weight[:ACTIVE] *= 20
        guide.head.weight[ACTIVE:8] = 0
        guide.head.bias[ACTIVE:8] = 0
    return model, guide


def independent_activity(guide, x, draws=4000):
    """Cov_x(E_q[z|x]) from many draws of q(z|x) taken straight from the guide's distribution."""
    with torch.no_grad():
        return guide.posterior(x).sample((draws,)).mean(0).var(0)


@pytest.mark.parametrize("guide_cls", [DiagonalNormalGuide, IAFGuide])
def test_active_units_match_an_independent_monte_carlo_estimate(digits, guide_cls):
    model, guide = guide_with_known_activity(digits, guide_cls)
    x = digits.test[:200]
    reference = independent_activity(guide, x)
    assert latents.active_units(reference) == ACTIVE
    activity = latents.guide_activity(guide, x)
    torch.testing.assert_close(activity, reference, rtol=0.1, atol=0.01)
    assert latents.active_units(activity) == ACTIVE
    assert evaluate(model, guide, x, k=10, elbo_samples=1)["active_units"] == ACTIVE
    # the diagnostics read the same metric from their own draws
    assert D.active_units(D.to_inference_data(model, guide, x, 64)) == ACTIVE


def test_a_flow_has_no_exact_mean_and_is_averaged_over_distinct_draws(digits):
    _, guide = guide_with_known_activity(digits, IAFGuide)
    x = digits.test[:50]
    z = latents.sample_latents(guide, x, num_samples=6)
    assert z.shape == (6, 50, 8)
    assert (z[0] != z[1]).all()  # one guide run, six draws per datapoint (not one draw broadcast)
    mean = latents.posterior_mean(guide, x, num_samples=2000)
    torch.testing.assert_close(mean, guide.posterior(x).sample((4000,)).mean(0), rtol=0.0, atol=0.1)


def test_exact_means_are_used_where_q_has_them(digits):
    _, guide = guide_with_known_activity(digits, DiagonalNormalGuide)
    x = digits.test[:30]
    with torch.no_grad():
        exact = guide.posterior(x).mean
    torch.testing.assert_close(latents.posterior_mean(guide, x), exact)
    torch.testing.assert_close(latents.guide_activity(guide, x), exact.var(0))


def test_monte_carlo_noise_does_not_make_a_collapsed_dimension_active():
    torch.manual_seed(0)
    draws = torch.randn(8, 500, 3)  # z ~ N(0, 1) whatever x: no activity
    naive = draws.mean(0).var(0)
    assert (naive > 0.1).all()  # the draw means' spread alone is ~1/8
    assert latents.latent_activity(draws).abs().max() < 0.03
    shifted = draws + torch.linspace(-2, 2, 500)[:, None]  # means that vary across data: Var = 4/3 + ...
    torch.testing.assert_close(latents.latent_activity(shifted), torch.full((3,), 1.3413), rtol=0.1, atol=0.0)


def test_padding_is_ignored():
    draws = torch.randn(5, 10, 4, 2)
    padded = draws.clone()
    padded[:, 3, 2:] = torch.nan  # sequence 3 has two padded steps
    activity = latents.latent_activity(padded)
    assert torch.isfinite(activity).all()
    z = torch.tensor([[0.0, 0.005, 1.0, torch.nan]])
    assert latents.code_sparsity(z) == pytest.approx(2 / 3)


def test_sparse_prior_is_the_one_rule_for_code_sparsity(digits):
    model = VAE.for_data(digits, 4, hidden=16)
    guide = DiagonalNormalGuide.for_model(model, hidden=16)
    x = digits.test[:20]
    assert not latents.has_sparse_prior(model)
    assert "code_sparsity" not in evaluate(model, guide, x, k=4, elbo_samples=1)
    model.prior = priors.Laplace(4)
    assert latents.has_sparse_prior(model)
    assert 0.0 <= evaluate(model, guide, x, k=4, elbo_samples=1)["code_sparsity"] <= 1.0

    def function_model(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(0.0, 1.0))

    assert not latents.has_sparse_prior(function_model)
