"""The one importance-weight function (ppgen.infer.importance): particles first ([K, N]), the
data plate found by its dim, per-site shares that add up, and the same weights behind the
IWAE objective, evaluate() and the diagnostics."""
import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from ppgen import diagnostics as D
from ppgen.distributions import SiteSequence, normal
from ppgen.distributions.declared import declared_mask, marginal_log_prob
from ppgen.distributions.spike_slab import SpikeAndSlab
from ppgen.evaluate import heldout_log_weights, iwae_log_likelihood
from ppgen.evaluate.sequences import step_site
from ppgen.guides import DiagonalNormalGuide
from ppgen.infer.importance import importance_sample, log_importance_weights
from ppgen.infer.objectives import IWAE
from ppgen.models import VAE


def local_model(x):
    """z_n ~ N(0, 1); x_n ~ N(z_n, 1), in a plate named "rows" (not "data")."""
    with pyro.plate("rows", x.shape[0]):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)


def local_guide(x):
    with pyro.plate("rows", x.shape[0]):
        pyro.sample("z", dist.Normal(x / 2, 0.8))


def exact_log_weights(x, z):
    return (dist.Normal(0.0, 1.0).log_prob(z) + dist.Normal(z, 1.0).log_prob(x)
            - dist.Normal(x / 2, 0.8).log_prob(z))


def test_weights_are_particles_first_and_the_data_plate_is_found_by_its_dim():
    x = torch.randn(7)
    sample = importance_sample(local_model, local_guide, x, num_particles=5)
    assert sample.data_plate == "rows"
    z = sample.guide_sites["z"]["value"]
    assert z.shape == (5, 7)
    log_w = sample.log_weights()
    assert log_w.shape == (5, 7)
    torch.testing.assert_close(log_w, exact_log_weights(x, z))
    terms = sample.site_terms()
    assert set(terms) == {"z", "x"} and all(t.shape == (5, 7) for t in terms.values())
    torch.testing.assert_close(terms["x"], dist.Normal(z, 1.0).log_prob(x))
    # every latent is local, so the joint weight of a draw is the sum of the per-datapoint ones
    torch.testing.assert_close(sample.log_density(sample.model_sites) - sample.log_density(sample.guide_sites),
                               log_w.sum(1))


def test_a_global_latent_has_no_per_datapoint_weight():
    def model(x):
        w = pyro.sample("w", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(w, 1.0), obs=x)

    def guide(x):
        pyro.sample("w", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="'w' is outside the data plate"):
        log_importance_weights(model, guide, torch.randn(3), num_particles=2)


def test_iwae_evaluate_and_diagnostics_share_the_weights(digits):
    torch.manual_seed(0)
    model = VAE.for_data(digits, 4, hidden=16)
    guide = DiagonalNormalGuide.for_model(model, hidden=16)
    x = digits.test[:30]
    pyro.set_rng_seed(3)
    log_w = log_importance_weights(model, guide, x, num_particles=6)
    pyro.set_rng_seed(3)
    loss = IWAE(6)(model, guide, x)
    torch.testing.assert_close(loss, -(torch.logsumexp(log_w, 0) - math.log(6)).sum())

    pyro.set_rng_seed(4)
    held_out = heldout_log_weights(model, guide, x, k=12, batch_size=8, chunk=5)
    assert held_out.shape == (12, 30)
    pyro.set_rng_seed(4)
    torch.testing.assert_close(iwae_log_likelihood(model, guide, x, k=12, batch_size=8, chunk=5),
                               torch.logsumexp(held_out, 0) - math.log(12))
    pyro.set_rng_seed(4)
    diag = D.importance_diagnostics(model, guide, x, 12, batch_size=8, chunk=5)
    torch.testing.assert_close(torch.as_tensor(diag["elbo"].values), held_out.double().mean(0))
    torch.testing.assert_close(torch.as_tensor(diag["log_px"].values),
                               (torch.logsumexp(held_out.double(), 0) - math.log(12)), rtol=1e-5, atol=1e-5)


def test_step_site_names():
    assert step_site("z_12") == ("z", 12) and step_site("h_prev_0") == ("h_prev", 0)
    assert step_site("z") is None and step_site("z_t") is None


# -- what distributions declare for diagnostics -----------------------------------------------

def test_spike_and_slab_declares_its_per_dimension_marginals():
    d = SpikeAndSlab(torch.tensor([0.3, 0.6, 0.9]), torch.zeros(3), torch.ones(3))
    z = torch.tensor([[0.0, 0.5, -1.0], [1.0, 0.0, 0.0]])
    per_dim = marginal_log_prob(d, z)
    assert per_dim.shape == (2, 3)
    torch.testing.assert_close(per_dim.sum(-1), d.log_prob(z))
    torch.testing.assert_close(per_dim[0, 0], torch.log(torch.tensor(0.7)))


def test_sequence_steps_declare_their_mask_and_marginals():
    mask = torch.tensor([[True, True], [True, False]])
    seq = SiteSequence(normal, mask, (2,))
    seq.step(0, torch.zeros(2, 2), torch.ones(2, 2))
    step = seq.step(1, torch.zeros(2, 2), torch.ones(2, 2))
    assert declared_mask(step).tolist() == [True, False]
    v = torch.randn(2, 2)
    torch.testing.assert_close(marginal_log_prob(step, v), dist.Normal(0.0, 1.0).log_prob(v))
    assert declared_mask(dist.Normal(0.0, 1.0)) is None
    assert declared_mask(dist.Normal(torch.zeros(2), 1.0).mask(torch.tensor([True, False]))).tolist() == [True, False]
    assert marginal_log_prob(dist.Normal(0.0, 1.0), torch.zeros(())) is None  # not a vector distribution
