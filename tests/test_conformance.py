"""Every (model, prior, guide, ELBO) combination the registries allow trains: finite, falling loss.
Combinations the registries do not allow fail at once with an error that names the problem."""
import itertools

import pytest
import torch

from ppgen import priors
from ppgen.data import load_digits
from ppgen.guides import GUIDES, check_sites
from ppgen.infer import fit
from ppgen.models import MODELS
from ppgen.infer.objectives import ELBOS

VAE_FAMILY = ["vae", "sparse_vae", "hvae"]


DEFAULT_GUIDE = {"vae": "diag_normal", "sparse_vae": "spike_and_slab", "hvae": "ladder"}
DEFAULT_PRIOR = {"vae": "normal", "sparse_vae": "spike_and_slab", "hvae": "normal"}


def build(model_name, prior_name, guide_name, digits, likelihood=None):
    extra = {} if likelihood is None else {"likelihood": likelihood}
    if model_name == "hvae":  # two layers; the prior is the top one's
        model = MODELS[model_name].for_data(digits, (8, 4), hidden=64, prior=priors.PRIORS[prior_name](4), **extra)
    else:
        model = MODELS[model_name].for_data(digits, z_dim=8, hidden=64, prior=priors.PRIORS[prior_name](8), **extra)
    guide = GUIDES[guide_name].for_model(model, hidden=64)
    model.prior.use_guide(guide, digits.train)  # the VampPrior takes the guide's encoder; other priors ignore it
    return model, guide


def why_not(model_name, prior_name, guide_name, digits):
    """None if the registries allow the combination, else the error it raises."""
    try:
        model, guide = build(model_name, prior_name, guide_name, digits)
        check_sites(model, guide, digits.train[:2])
    except (ValueError, TypeError, AttributeError) as e:
        return e
    return None


COMBOS = list(itertools.product(VAE_FAMILY, priors.PRIORS, GUIDES))
ALLOWED = [c for c in COMBOS if why_not(*c, load_digits()) is None]  # decided at collection: no skips


def test_disallowed_combinations_are_the_expected_ones(digits):
    refused = {c: why_not(*c, digits) for c in COMBOS}
    refused = {c: e for c, e in refused.items() if e is not None}
    sparse = {"laplace", "spike_and_slab"}
    for (model_name, prior_name, guide_name), err in refused.items():
        if guide_name.startswith("vrnn"):
            continue  # sequence guides do not fit image models
        if (model_name == "hvae") != (guide_name == "ladder"):  # one-layer guides vs a hierarchy's sites z1, z2
            assert any(why in str(err) for why in ("ladder guide needs a hierarchical model", "z1", "prior")), err
            continue
        assert (guide_name == "spike_and_slab" and prior_name != "spike_and_slab") or (
            model_name == "sparse_vae" and prior_name not in sparse), (model_name, prior_name, guide_name, err)
        assert prior_name in str(err) or "prior" in str(err)
    allowed = [c for c in COMBOS if c not in refused]
    assert ("vae", "mixture", "iaf") in allowed and ("sparse_vae", "spike_and_slab", "spike_and_slab") in allowed
    assert {("hvae", prior, "ladder") for prior in ("normal", "mixture", "vampprior")} <= set(allowed)
    assert len(allowed) >= 20


@pytest.mark.parametrize("elbo", list(ELBOS))
@pytest.mark.parametrize("model_name,prior_name,guide_name", ALLOWED)
def test_allowed_combination_trains(model_name, prior_name, guide_name, elbo, digits):
    torch.manual_seed(0)
    model, guide = build(model_name, prior_name, guide_name, digits)
    x = digits.train[:64]
    hist = fit(model, guide, x, epochs=40, batch_size=64, lr=3e-3, elbo=elbo,
               num_particles=3 if elbo == "iwae" else 1, device="cpu", progress=False, seed=0)
    losses = torch.tensor(hist.step_loss)
    assert torch.isfinite(losses).all()
    assert losses[-5:].mean() < losses[:5].mean() - 5.0, (losses[:5], losses[-5:])


#: the likelihoods that can score the digits counts 0..16 (levels taken from the data)
DIGITS_LIKELIHOODS = ["categorical", "binomial", "autoregressive_categorical"]


@pytest.mark.parametrize("elbo", list(ELBOS))
@pytest.mark.parametrize("likelihood", DIGITS_LIKELIHOODS)
@pytest.mark.parametrize("model_name", VAE_FAMILY)
def test_every_likelihood_trains(model_name, likelihood, elbo, digits):
    """Each likelihood for count data, with the model's own prior and guide, under every objective."""
    torch.manual_seed(0)
    model, guide = build(model_name, DEFAULT_PRIOR[model_name], DEFAULT_GUIDE[model_name], digits, likelihood)
    assert model.likelihood.name == likelihood and model.likelihood.levels == 17
    hist = fit(model, guide, digits.train[:64], epochs=40, batch_size=64, lr=3e-3, elbo=elbo,
               num_particles=3 if elbo == "iwae" else 1, device="cpu", progress=False, seed=0)
    losses = torch.tensor(hist.step_loss)
    assert torch.isfinite(losses).all()
    assert losses[-5:].mean() < losses[:5].mean() - 5.0, (losses[:5], losses[-5:])


@pytest.mark.parametrize("elbo", list(ELBOS))
def test_spike_gradient_score_trains_under_trace_and_is_refused_elsewhere(elbo, digits):
    """The unbiased spike gradient: trains with a falling loss under the objectives that add its
    score-function term (trace, and enum: Pyro's TraceEnum_ELBO takes the score parts of sites it
    does not enumerate); the others stop at once rather than train on a biased gradient."""
    torch.manual_seed(0)
    model, guide = build("sparse_vae", "spike_and_slab", "spike_and_slab", digits)
    guide.spike_gradient = "score"
    kwargs = dict(epochs=40, batch_size=64, lr=3e-3, elbo=elbo, num_particles=3 if elbo == "iwae" else 1,
                  device="cpu", progress=False, seed=0)
    if elbo not in ("trace", "enum"):
        with pytest.raises(RuntimeError, match="score"):
            fit(model, guide, digits.train[:64], **kwargs)
        return
    losses = torch.tensor(fit(model, guide, digits.train[:64], **kwargs).step_loss)
    assert torch.isfinite(losses).all()
    assert losses[-5:].mean() < losses[:5].mean() - 5.0, (losses[:5], losses[-5:])
