"""The autoregressive Bernoulli observation model (ppgen.nn.made) against enumeration, and in a VRNN."""
from __future__ import annotations

import itertools
import math

import pyro
import pytest
import torch
import torch.distributions as td

from ppgen.data import load_synthetic
from ppgen.guides import GUIDES
from ppgen.infer import fit
from ppgen.likelihoods import LIKELIHOODS
from ppgen.distributions.autoregressive import AutoregressiveBernoulli
from ppgen.nn.made import MaskedAutoregressiveNet
from ppgen.models.vrnn import VRNN
from ppgen.infer.objectives import TraceELBO, log_importance_weights


@pytest.fixture(autouse=True)
def _seed():
    pyro.clear_param_store()
    torch.manual_seed(0)
    pyro.set_rng_seed(0)


def random_net(D=5, H=7):
    net = MaskedAutoregressiveNet(D, H)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_()
    return net


def every_vector(D):
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=D)))   # [2^D, D]


def exact_probs(net, context):
    """p(x | c) for every x in {0,1}^D: ``[2^D, *batch]``."""
    return AutoregressiveBernoulli(net, context).log_prob(every_vector(net.x_dim)[:, None, :]).exp()


@pytest.mark.parametrize("D, H", [(1, 3), (5, 7), (6, 2)])
def test_probabilities_sum_to_one(D, H):
    net = random_net(D, H)
    context = 2 * torch.randn(3, net.context_features)
    assert torch.allclose(exact_probs(net, context).sum(0), torch.ones(3), atol=1e-5)


def test_logit_d_depends_on_earlier_dimensions_only():
    net = random_net(6, 9)
    x = torch.randn(6, requires_grad=True)
    jac = torch.autograd.functional.jacobian(lambda v: net(v, torch.zeros(net.context_features)), x)
    assert torch.all(jac.triu() == 0)            # d logit_d / d x_j = 0 for j >= d
    assert torch.all(jac.tril(-1)[1:].abs().sum(-1) > 0)  # ... and the earlier ones are used


def test_zero_masked_weights_give_the_factorised_bernoulli():
    lik = LIKELIHOODS["autoregressive_bernoulli"](5, hidden=4)
    with torch.no_grad():
        lik.net.w_out.zero_(), lik.net.w_direct.zero_()
    raw = torch.randn(2, 3, lik.out_features)
    x = (torch.rand(2, 3, 5) < 0.5).float()
    expected = td.Bernoulli(logits=raw[..., 4:]).log_prob(x).sum(-1)
    assert torch.allclose(lik(raw).log_prob(x), expected, atol=1e-6)


def test_samples_follow_the_enumerated_law_and_the_mean_matches_it():
    net = random_net(3, 5)
    context = torch.randn(net.context_features)
    d = AutoregressiveBernoulli(net, context)
    probs = exact_probs(net, context).flatten()               # [8]
    draws = d.sample((20000,))
    assert draws.shape == (20000, 3) and set(draws.unique().tolist()) <= {0.0, 1.0}
    codes = (draws * torch.tensor([4.0, 2.0, 1.0])).sum(-1).long()   # itertools order: first dim most significant
    freq = torch.bincount(codes, minlength=8).float() / len(codes)
    assert torch.allclose(freq, probs, atol=0.015), (freq, probs)
    exact_mean = (probs[:, None] * every_vector(3)).sum(0)
    d.mean_samples = 4000
    assert torch.allclose(d.mean, exact_mean, atol=0.03)


def test_shapes_broadcast_over_particles_and_expand():
    lik = LIKELIHOODS["autoregressive_bernoulli"](4, hidden=6)
    raw = torch.randn(5, 2, 3, lik.out_features)                     # [K, B, T, C]
    x = (torch.rand(2, 3, 4) < 0.5).float()                           # [B, T, D]
    d = lik(raw)
    assert d.batch_shape == (5, 2, 3) and d.event_shape == (4,)
    assert d.log_prob(x).shape == (5, 2, 3)
    e = lik(raw[0, :, 0]).expand((7, 2))
    assert e.batch_shape == (7, 2) and e.sample().shape == (7, 2, 4)
    with pytest.raises(ValueError, match="context has 3 features"):
        AutoregressiveBernoulli(lik.net, torch.randn(3))


def test_a_net_with_levels_is_refused():
    net = MaskedAutoregressiveNet(4, 6, levels=3)
    assert net(torch.zeros(4), torch.zeros(net.context_features)).shape == (4, 3)
    with pytest.raises(ValueError, match="binary MaskedAutoregressiveNet"):
        AutoregressiveBernoulli(net, torch.zeros(net.context_features))


def test_support_errors_name_the_likelihood():
    lik = LIKELIHOODS["autoregressive_bernoulli"](4)
    with pytest.raises(ValueError, match="autoregressive Bernoulli"):
        lik.check(torch.tensor([0.0, 1.0, 0.5, 1.0]))


# -- in the VRNN -----------------------------------------------------------------------------------
def test_vrnn_elbo_is_the_exact_likelihood_when_latents_do_not_matter():
    """Decoder output fixed (weights 0, bias = context), prior N(0, I), guide = prior: the ELBO
    and every importance weight equal sum_t log p(x_t | c) under the autoregressive law."""
    D, Z, H = 5, 2, 8
    model = VRNN(D, Z, H, prior="standard", likelihood="autoregressive_bernoulli", likelihood_kwargs={"hidden": 6})
    guide = GUIDES["vrnn_smoothing"].for_model(model)
    context = torch.randn(model.likelihood.out_features)
    with torch.no_grad():
        for p in model.likelihood.net.parameters():
            p.normal_()
        model.decoder[-1].weight.zero_()
        model.decoder[-1].bias.copy_(context)
        guide.head[-1].weight.zero_()
        guide.head[-1].bias.copy_(torch.cat([torch.zeros(Z), torch.full((Z,), math.log(math.expm1(1 - 1e-4)))]))
    x = (torch.rand(3, 6, D) < 0.4).float()
    mask = torch.arange(6)[None] < torch.tensor([6, 2, 4])[:, None]
    x = x * mask[..., None]
    exact = (AutoregressiveBernoulli(model.likelihood.net, context).log_prob(x) * mask).sum(-1)   # [B]
    assert torch.allclose(-TraceELBO()(model, guide, x, mask), exact.sum(), atol=1e-3)
    assert torch.allclose(log_importance_weights(model, guide, x, mask, num_particles=4), exact.expand(4, -1),
                          atol=1e-3)


def test_vrnn_with_autoregressive_emissions_trains_and_generates():
    data = load_synthetic("binary", n=40, T=16, seed=1)
    model = VRNN.for_data(data, z_dim=4, hidden=32, likelihood="autoregressive_bernoulli")
    guide = GUIDES["vrnn_filtering"].for_model(model)
    hist = fit(model, guide, data, epochs=6, batch_size=12, lr=3e-3, anneal_epochs=2, progress=False)
    assert hist.train_elbo[-1] > hist.train_elbo[0] + 50 and hist.val_elbo[-1] > hist.val_elbo[0]
    rolls = model.sample(3, 7)
    assert rolls.shape == (3, 7, data.x_dim) and set(rolls.unique().tolist()) <= {0.0, 1.0}
    means = model.sample(2, 4, mean=True)
    assert means.shape == (2, 4, data.x_dim) and ((means >= 0) & (means <= 1)).all()
    from ppgen.runs.vrnn import build
    rebuilt = build({"likelihood": "autoregressive_bernoulli", "z_dim": 4, "hidden": 32}, data)[0]
    rebuilt.load_state_dict(model.state_dict())   # the masked net's weights are part of the model
    with pytest.raises(ValueError, match="autoregressive Bernoulli"):
        model.check_data(data.train[0] * 0.5, data.train[1])
