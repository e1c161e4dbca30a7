"""The VampPrior p(z) = (1/K) sum_k q(z | u_k): a proper mixture of the guide's posteriors at its
pseudo-inputs, trained through the encoder, saved and reloaded as part of a run."""
import math

import torch
from torch import nn

from ppgen import priors
from ppgen.guides import DiagonalNormalGuide, IAFGuide
from ppgen.infer import fit
from ppgen.models import VAE
from ppgen.runs import open_run, train_run
from ppgen.runs.api import evaluate_run


def tiny_guide(x_dim=3, z_dim=2, seed=0):
    torch.manual_seed(seed)
    return DiagonalNormalGuide(x_dim, z_dim, hidden=8)


def test_density_normalises_over_a_grid():
    guide = tiny_guide()
    prior = priors.VampPrior(2, guide.posterior, components=4, x_dim=3,
                             pseudo_inputs=torch.randn(4, 3))
    step = 0.05
    axis = torch.arange(-12, 12, step)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1)  # [G, G, 2]: leading dims broadcast
    with torch.no_grad():
        density = prior().log_prob(grid).exp()
    assert density.shape == grid.shape[:2]
    assert abs(density.sum().item() * step ** 2 - 1.0) < 1e-3


def test_one_component_is_that_gaussian():
    guide = tiny_guide()
    u = torch.randn(1, 3)
    prior = priors.VampPrior(2, guide.posterior, pseudo_inputs=u)
    z = torch.randn(5, 7, 2)
    with torch.no_grad():
        loc, scale = guide.posterior(u).base_dist.loc[0], guide.posterior(u).base_dist.scale[0]
        expected = torch.distributions.Normal(loc, scale).log_prob(z).sum(-1)  # independent closed form
        torch.testing.assert_close(prior().log_prob(z), expected)


def test_mixture_is_the_mean_of_the_components_for_a_flow_guide():
    torch.manual_seed(0)
    guide = IAFGuide(3, 2, hidden=8, flow_hidden=8)
    u = torch.randn(3, 3)
    prior = priors.VampPrior(2, guide.posterior, pseudo_inputs=u)
    z = torch.randn(4, 2)
    with torch.no_grad():
        each = torch.stack([guide.posterior(u[k:k + 1]).log_prob(z) for k in range(3)], -1)
        torch.testing.assert_close(prior().log_prob(z), each.logsumexp(-1) - math.log(3))


def test_pseudo_inputs_belong_to_the_prior_not_the_guide_weights():
    guide = tiny_guide()
    model = VAE(3, 2, likelihood="bernoulli", hidden=8)
    model.prior = priors.VampPrior(2, guide.posterior, components=6, x_dim=3)
    keys = set(model.state_dict())
    assert "prior.pseudo_inputs" in keys and not any("encoder" in k or "head" in k for k in keys)
    assert isinstance(model.prior.pseudo_inputs, nn.Parameter) and model.prior.pseudo_inputs.shape == (6, 3)
    # the encoder's gradient through log p(z) reaches the guide's parameters
    model.prior().log_prob(torch.randn(4, 2)).sum().backward()
    assert guide.head.weight.grad is not None and guide.head.weight.grad.abs().sum() > 0
    assert model.prior.pseudo_inputs.grad.abs().sum() > 0


def test_without_an_encoder_it_says_how_to_give_one():
    prior = priors.PRIORS["vampprior"](2)
    try:
        prior()
    except ValueError as e:
        assert "use_guide" in str(e)
    else:
        raise AssertionError("a VampPrior without an encoder returned a distribution")


def test_swapped_onto_a_vae_it_trains_and_moves_its_pseudo_inputs(digits):
    torch.manual_seed(0)
    vae = VAE.for_data(digits, z_dim=4, hidden=32)
    guide = DiagonalNormalGuide.for_model(vae, hidden=32)
    vae.prior = priors.VampPrior(vae.z_dim, guide.posterior, components=10, x_dim=vae.x_dim,
                                 pseudo_inputs=digits.train[:10])
    before = vae.prior.pseudo_inputs.detach().clone()
    hist = fit(vae, guide, digits.train[:128], epochs=15, batch_size=64, lr=3e-3, device="cpu",
               progress=False, seed=0)
    losses = torch.tensor(hist.step_loss)
    assert torch.isfinite(losses).all()
    assert losses[-4:].mean() < losses[:4].mean() - 5.0, (losses[:4], losses[-4:])
    assert (vae.prior.pseudo_inputs.detach() - before).abs().max() > 1e-3


def test_run_trains_and_reloads_with_the_same_test_elbo(tmp_path):
    config = {"model": "vae", "data": "digits", "prior": "vampprior", "epochs": 1, "hidden": 32, "z_dim": 4,
              "seed": 0}
    metrics = train_run(config, tmp_path / "vamp", device="cpu", progress=False, iwae_k=5)
    run = open_run(tmp_path / "vamp", device="cpu")
    model, guide = run.parts["model"], run.parts["guide"]
    assert model.prior.name == "vampprior" and model.prior.posterior == guide.posterior
    fresh = run.family.build(run.config, run.dataset)["model"].prior.pseudo_inputs  # as built, before training
    assert (model.prior.pseudo_inputs.detach().cpu() - fresh.detach()).abs().max() > 0  # the trained ones came back
    again = evaluate_run(run.family, run.parts, run.dataset, run.config, 5, seed=0)
    for key in ("test_elbo_nats", "test_iwae_nats"):
        assert math.isfinite(metrics[key]) and again[key] == metrics[key], key
