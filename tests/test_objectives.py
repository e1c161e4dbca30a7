"""ppgen's objectives against Pyro's on the same random draws.

``TraceELBO`` and ``MeanFieldELBO`` run their own lean tracing while Pyro validation is off
(as in training); these tests pin their value and gradients to ``pyro.infer.Trace_ELBO`` and
``TraceMeanField_ELBO`` under identical seeds, across priors, guides, masks, KL weights,
vectorized particles, non-reparameterized sites and ``pyro.markov`` loops. Everything runs in
float64 so that agreement can be checked tightly (the two sides sum terms in different orders).
"""
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites
from torch import nn

from ppgen import likelihoods, priors
from ppgen.guides import GUIDES, check_sites
from ppgen.models import VAE, SparseVAE
from ppgen.infer.objectives import IWAE, MeanFieldELBO, TraceELBO, log_importance_weights, with_beta

N, X_DIM, Z_DIM, LEVELS = 6, 10, 3, 5


pytestmark = pytest.mark.usefixtures("float64")


def lean(objective):
    """The objective with Pyro's fallback removed, so a test cannot pass by falling back."""
    objective.pyro_elbo = None
    return objective


def reference(kind, num_particles):
    cls = {"trace": pyro.infer.Trace_ELBO, "meanfield": pyro.infer.TraceMeanField_ELBO}[kind]
    return cls(num_particles=num_particles, vectorize_particles=num_particles > 1, max_plate_nesting=1)


def assert_same(ours, theirs, modules, model, guide, *args, seed=0):
    """Same value and same gradients for every parameter of ``modules``, from the same seed."""
    params = [p for m in modules for p in m.parameters()]
    with pyro.validation_enabled(False):
        pyro.set_rng_seed(seed)
        a = ours(model, guide, *args)
        pyro.set_rng_seed(seed)
        b = theirs.differentiable_loss(model, guide, *args)
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-9)
    ga = torch.autograd.grad(a, params, allow_unused=True)
    gb = torch.autograd.grad(b, params, allow_unused=True)
    assert len(params) > 0
    for p, x, y in zip(params, ga, gb):
        if x is None or y is None:
            assert x is None and y is None
            continue
        torch.testing.assert_close(x, y, rtol=1e-8, atol=1e-9)
    return a


def data():
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, LEVELS, (N, X_DIM), generator=g).double()


def vae_pair(prior, guide):
    model_cls = SparseVAE if prior == "spike_and_slab" and guide == "spike_and_slab" else VAE
    model = model_cls(X_DIM, Z_DIM, likelihood="categorical", likelihood_kwargs={"levels": LEVELS},
                      prior=priors.PRIORS[prior](Z_DIM), hidden=8)
    guide = GUIDES[guide].for_model(model, hidden=8)
    if hasattr(guide, "flows"):  # IAF flows start near the identity; perturb so they matter
        with torch.no_grad():
            for p in guide.flows.parameters():
                p.add_(0.1 * torch.randn_like(p))
    model.double(), guide.double()
    check_sites(model, guide, data()[:2])
    return model, guide


PAIRS = [
    ("normal", "diag_normal"),
    ("normal", "lowrank_normal"),
    ("normal", "iaf"),
    ("laplace", "diag_normal"),
    ("student_t", "diag_normal"),
    ("mixture", "diag_normal"),
    ("mixture", "iaf"),
    ("spike_and_slab", "spike_and_slab"),
    ("spike_and_slab", "diag_normal"),
]


@pytest.mark.parametrize("prior,guide_name", PAIRS)
@pytest.mark.parametrize("kind,cls", [("trace", TraceELBO), ("meanfield", MeanFieldELBO)])
@pytest.mark.parametrize("num_particles", [1, 3])
@pytest.mark.parametrize("beta", [1.0, 0.3])
def test_vae_matches_pyro(prior, guide_name, kind, cls, num_particles, beta):
    model, guide = vae_pair(prior, guide_name)
    x = data()
    value = assert_same(lean(cls(num_particles)), reference(kind, num_particles), (model, guide),
                        with_beta(model, beta), with_beta(guide, beta), x)
    assert torch.isfinite(value)


@pytest.mark.parametrize("kind,cls", [("trace", TraceELBO), ("meanfield", MeanFieldELBO)])
@pytest.mark.parametrize("num_particles", [1, 4])
def test_masked_and_scaled_sites_match_pyro(kind, cls, num_particles):
    model, guide = vae_pair("mixture", "diag_normal")
    x = data()
    mask = torch.tensor([True, False, True, True, False, True])

    def masked(fn):
        return poutine.scale(poutine.mask(fn, mask=mask), scale=2.5)

    value = assert_same(lean(cls(num_particles)), reference(kind, num_particles), (model, guide),
                        with_beta(masked(model), 0.5), with_beta(masked(guide), 0.5), x)
    # masked datapoints contribute nothing: dropping them from the data leaves the value
    with pyro.validation_enabled(False):
        pyro.set_rng_seed(3)
        full = TraceELBO(1)(poutine.mask(model, mask=mask), poutine.mask(guide, mask=mask), x)
        fully_masked = TraceELBO(1)(poutine.mask(model, mask=torch.zeros(N, dtype=torch.bool)),
                                    poutine.mask(guide, mask=torch.zeros(N, dtype=torch.bool)), x)
    assert torch.isfinite(value) and torch.isfinite(full)
    assert fully_masked.item() == 0.0


class DiscreteModel(nn.Module):
    """A global reparameterized latent, a global Bernoulli, a local categorical and a local
    Normal: exercises the score-function surrogate and its plate-wise Rao-Blackwellization."""

    def __init__(self):
        super().__init__()
        self.means = nn.Parameter(torch.tensor([-1.0, 0.5, 2.0]))
        self.logits = nn.Parameter(torch.tensor([0.1, -0.2, 0.3]))

    def forward(self, x):
        g = pyro.sample("g", dist.Normal(torch.tensor(0.0), 1.0))
        b = pyro.sample("b", dist.Bernoulli(torch.tensor(0.4)))
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", dist.Categorical(logits=self.logits))
            z = pyro.sample("z", dist.Normal(self.means[c] + g + b, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)


class DiscreteGuide(nn.Module):
    def __init__(self):
        super().__init__()
        self.g = nn.Parameter(torch.tensor([0.3, -0.5]))
        self.b = nn.Parameter(torch.tensor(0.2))
        self.c = nn.Linear(1, 3)
        self.z = nn.Linear(1, 2)

    def forward(self, x):
        pyro.sample("g", dist.Normal(self.g[0], self.g[1].exp()))
        pyro.sample("b", dist.Bernoulli(logits=self.b))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("c", dist.Categorical(logits=self.c(x[:, None])))
            loc, log_scale = self.z(x[:, None]).unbind(-1)
            pyro.sample("z", dist.Normal(loc, log_scale.exp()))


@pytest.mark.parametrize("num_particles", [1, 3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_score_function_sites_match_pyro(num_particles, seed):
    model, guide = DiscreteModel(), DiscreteGuide()
    x = torch.linspace(-2, 3, N)
    value = assert_same(lean(TraceELBO(num_particles)), reference("trace", num_particles), (model, guide),
                        model, guide, x, seed=seed)
    assert torch.isfinite(value)
    # and with a KL weight and a mask on the local sites
    mask = torch.tensor([True, True, False, True, False, True])
    assert_same(lean(TraceELBO(num_particles)), reference("trace", num_particles), (model, guide),
                with_beta(poutine.mask(model, mask=mask), 0.2), with_beta(poutine.mask(guide, mask=mask), 0.2), x,
                seed=seed)


class MarkovModel(nn.Module):
    """A small state-space model over padded sequences, like the VRNN: one latent and one
    observed site per step in ``pyro.markov``, padded steps masked out, plus a discrete
    per-step switch (non-reparameterized) in the guide."""

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(0.7))
        self.w = nn.Parameter(torch.tensor(1.3))
        self.p = nn.Parameter(torch.tensor(0.1))

    def forward(self, x, mask):
        with pyro.plate("data", x.shape[0]):
            h = torch.zeros(x.shape[0])
            for t in pyro.markov(range(x.shape[1])):
                with poutine.mask(mask=mask[:, t]):
                    s = pyro.sample(f"s_{t}", dist.Bernoulli(logits=self.p.expand(x.shape[0])))
                    z = pyro.sample(f"z_{t}", dist.Normal(self.a * h + s, 1.0))
                    h = torch.tanh(z + h)
                    pyro.sample(f"x_{t}", dist.Normal(self.w * h, 1.0), obs=x[:, t])


class MarkovGuide(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(2, 3)

    def forward(self, x, mask):
        with pyro.plate("data", x.shape[0]):
            z = torch.zeros(x.shape[0])
            for t in pyro.markov(range(x.shape[1])):
                with poutine.mask(mask=mask[:, t]):
                    feats = torch.stack(torch.broadcast_tensors(x[:, t], z), -1)
                    logit, loc, log_scale = self.net(feats).unbind(-1)
                    pyro.sample(f"s_{t}", dist.Bernoulli(logits=logit))
                    z = pyro.sample(f"z_{t}", dist.Normal(loc, log_scale.exp()))


@pytest.mark.parametrize("num_particles", [1, 2])
@pytest.mark.parametrize("beta", [1.0, 0.5])
def test_markov_loop_with_padding_matches_pyro(num_particles, beta):
    model, guide = MarkovModel(), MarkovGuide()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(N, 5, generator=g)
    lengths = torch.tensor([5, 3, 1, 5, 4, 2])
    mask = torch.arange(5) < lengths[:, None]
    value = assert_same(lean(TraceELBO(num_particles)), reference("trace", num_particles), (model, guide),
                        with_beta(model, beta), with_beta(guide, beta), x, mask)
    assert torch.isfinite(value)


def test_validation_on_uses_pyro_with_its_checks():
    model, guide = vae_pair("normal", "diag_normal")
    x = data()
    with pyro.validation_enabled(True):
        pyro.set_rng_seed(0)
        a = TraceELBO()(model, guide, x)
        pyro.set_rng_seed(0)
        b = pyro.infer.Trace_ELBO(max_plate_nesting=1).differentiable_loss(model, guide, x)
    torch.testing.assert_close(a, b)


def test_duplicate_site_names_raise():
    def model(x):
        pyro.sample("a", dist.Normal(0.0, 1.0))
        pyro.sample("a", dist.Normal(0.0, 1.0))

    with pyro.validation_enabled(False), pytest.raises(RuntimeError, match="Multiple sample sites"):
        lean(TraceELBO())(model, lambda x: None, data())


def reference_log_weights(model, guide, x, num_particles):
    """log w[k, n] through Pyro's trace/replay (the implementation ppgen had before)."""
    plate = pyro.plate("_particles", num_particles, dim=-2)
    guide_trace = poutine.trace(plate(guide)).get_trace(x)
    model_trace = poutine.trace(poutine.replay(plate(model), trace=guide_trace)).get_trace(x)
    total = 0.0
    for trace, sign in ((model_trace, 1.0), (guide_trace, -1.0)):
        trace = prune_subsample_sites(trace)
        trace.compute_log_prob()
        for site in trace.nodes.values():
            if site["type"] == "sample":
                lp = site["log_prob"]
                total = total + sign * lp.reshape((1,) * max(0, 2 - lp.dim()) + lp.shape).expand(num_particles, -1)
    return total


@pytest.mark.parametrize("prior,guide_name", [("normal", "diag_normal"), ("mixture", "iaf"),
                                              ("spike_and_slab", "spike_and_slab")])
@pytest.mark.parametrize("num_particles", [1, 7])
def test_log_importance_weights_match_trace_implementation(prior, guide_name, num_particles):
    model, guide = vae_pair(prior, guide_name)
    x = data()
    with pyro.validation_enabled(False):
        pyro.set_rng_seed(5)
        ours = log_importance_weights(model, guide, x, num_particles=num_particles)
        pyro.set_rng_seed(5)
        theirs = reference_log_weights(model, guide, x, num_particles)
    assert ours.shape == (num_particles, N)
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-9)
    pyro.set_rng_seed(5)
    iwae = IWAE(num_particles)(model, guide, x)
    torch.testing.assert_close(iwae, -(torch.logsumexp(theirs, 0) - math.log(num_particles)).sum())


def test_iwae_with_one_particle_is_the_elbo():
    model, guide = vae_pair("normal", "diag_normal")
    x = data()
    with pyro.validation_enabled(False):
        pyro.set_rng_seed(0)
        a = IWAE(1)(model, guide, x)
        pyro.set_rng_seed(0)
        b = pyro.infer.Trace_ELBO(max_plate_nesting=1).differentiable_loss(model, guide, x)
    torch.testing.assert_close(a, b)


# -- the faster distributions used by the default VAE give the reference numbers ---------------

def test_categorical_likelihood_matches_torch():
    lik = likelihoods.Categorical(X_DIM, levels=LEVELS)
    raw = torch.randn(4, X_DIM * LEVELS, requires_grad=True)
    x = torch.randint(0, LEVELS, (4, X_DIM)).double()
    ours = lik(raw)
    ref = dist.Categorical(logits=raw.reshape(4, X_DIM, LEVELS)).to_event(1)
    assert ours.batch_shape == ref.batch_shape and ours.event_shape == ref.event_shape
    torch.testing.assert_close(ours.log_prob(x), ref.log_prob(x))
    torch.testing.assert_close(torch.autograd.grad(ours.log_prob(x).sum(), raw)[0],
                               torch.autograd.grad(ref.log_prob(x).sum(), raw)[0])
    expanded = ours.expand([3, 4])
    assert expanded.batch_shape == (3, 4) and expanded.log_prob(x).shape == (3, 4)
    assert expanded.sample().shape == (3, 4, X_DIM)
    torch.testing.assert_close(ours.base_dist.probs, ref.base_dist.probs)


def test_standard_normal_prior_matches_normal_and_follows_dtype():
    prior = priors.StandardNormal(Z_DIM)
    z = torch.randn(4, 2, Z_DIM, requires_grad=True)
    ref = dist.Normal(torch.zeros(Z_DIM), torch.ones(Z_DIM)).to_event(1)
    torch.testing.assert_close(prior().log_prob(z), ref.log_prob(z))
    torch.testing.assert_close(prior().expand([4, 2]).log_prob(z[:1]), ref.expand([4, 2]).log_prob(z[:1]))  # broadcasts
    torch.testing.assert_close(torch.autograd.grad(prior().log_prob(z).sum(), z)[0],
                               torch.autograd.grad(ref.log_prob(z).sum(), z)[0])
    assert prior() is prior()  # built once
    with pyro.validation_enabled(not torch.distributions.Distribution._validate_args):
        assert prior()._validate_args is torch.distributions.Distribution._validate_args  # rebuilt
    prior.float()
    assert prior().mean.dtype == torch.float32  # rebuilt when .to() replaced the buffer
    q = dist.Normal(torch.randn(Z_DIM), torch.rand(Z_DIM) + 0.5).to_event(1)
    prior.double()
    torch.testing.assert_close(torch.distributions.kl_divergence(q, prior()),
                               torch.distributions.kl_divergence(q, ref))


def test_diagonal_guide_scores_its_draws_like_normal():
    guide = GUIDES["diag_normal"](X_DIM, Z_DIM, hidden=8)
    x = data()
    q = guide.posterior(x)
    pyro.set_rng_seed(0)
    z = q.rsample()
    pyro.set_rng_seed(0)
    ref = dist.Normal(q.base_dist.loc, q.base_dist.scale).to_event(1)
    torch.testing.assert_close(z, ref.rsample())  # the same draws
    params = list(guide.parameters())
    ours_grad = torch.autograd.grad(q.log_prob(z).sum(), params, retain_graph=True)
    ref_grad = torch.autograd.grad(ref.log_prob(z).sum(), params)
    torch.testing.assert_close(q.log_prob(z), ref.log_prob(z))
    for a, b in zip(ours_grad, ref_grad):
        torch.testing.assert_close(a, b)
    other = z.detach() + 0.5  # any other value takes the general formula
    torch.testing.assert_close(q.log_prob(other), ref.log_prob(other))
