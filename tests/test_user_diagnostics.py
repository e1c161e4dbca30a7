"""Evaluate, diagnostics and the report for pairs a user writes: plain Pyro functions with
their own site and plate names (issue 11, points 5-8), global + local latents against
closed forms, and what ArviZ's LOO says on ppgen's InferenceData."""
import json
import math
import warnings

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam
from torch import nn

import ppgen
from ppgen import diagnostics as D
from ppgen.evaluate import evaluate, latents

# -- a VAE written from scratch: Beta likelihood, latent "code", observed "obs", plate "points" ----

Z, HIDDEN = 4, 32


def make_vae(d):
    torch.manual_seed(0)
    decoder = nn.Sequential(nn.Linear(Z, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, 2 * d))
    encoder = nn.Sequential(nn.Linear(d, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, 2 * Z))

    def model(x):
        pyro.module("decoder", decoder)
        with pyro.plate("points", x.shape[0]):
            code = pyro.sample("code", dist.Normal(torch.zeros(Z), 1.0).to_event(1))
            a, b = nn.functional.softplus(decoder(code)).add(0.05).chunk(2, -1)
            pyro.sample("obs", dist.Beta(a, b).to_event(1), obs=x)

    def guide(x):
        pyro.module("encoder", encoder)
        with pyro.plate("points", x.shape[0]):
            loc, log_scale = encoder(x).chunk(2, -1)
            pyro.sample("code", dist.Normal(loc, log_scale.exp()).to_event(1))

    return model, guide, encoder


@pytest.fixture(scope="module")
def user_vae(digits):
    x = (digits.train[:300].float() + 0.5) / 17.0  # grey levels in (0, 1)
    test = (digits.test[:60].float() + 0.5) / 17.0
    model, guide, encoder = make_vae(x.shape[1])
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    svi = SVI(model, guide, Adam({"lr": 3e-3}), Trace_ELBO())
    for _ in range(150):
        svi.step(x)
    return model, guide, encoder, test


def test_evaluate_finds_a_latent_site_named_code(user_vae):
    model, guide, encoder, x = user_vae
    metrics = evaluate(model, guide, x, k=20, elbo_samples=2, sparsity=True)
    assert math.isfinite(metrics["test_elbo_nats"]) and metrics["test_iwae_nats"] >= metrics["test_elbo_nats"] - 1.0
    with torch.no_grad():
        exact_means = encoder(x).chunk(2, -1)[0]  # E_q[code | x], straight from the encoder
    assert metrics["active_units"] == latents.active_units(exact_means.var(0))
    assert 0.0 <= metrics["code_sparsity"] <= 1.0
    assert "global_latents" not in metrics


def test_inference_data_of_a_site_named_obs(user_vae):
    model, guide, _, x = user_vae
    idata = D.to_inference_data(model, guide, x, 10)
    assert idata.observed_data["obs"].dims == ("datapoint", "feature")
    assert idata.posterior["code"].dims == ("chain", "draw", "datapoint", "latent")
    assert idata.conditional_log_likelihood["obs"].dims == ("chain", "draw", "datapoint")
    assert "log_likelihood" not in idata.groups()  # all latents local: nothing for az.loo (see below)
    assert idata.posterior.attrs["model"] == "model" and idata.posterior.attrs["guide"] == "guide"
    assert D.active_units(idata, "code") >= 0


def test_a_site_named_like_a_dimension_keeps_its_name_and_the_dimension_moves():
    def model(x):
        with pyro.plate("points", x.shape[0]):
            latent = pyro.sample("latent", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("obs", dist.Normal(latent.sum(-1), 1.0), obs=x)

    def guide(x):
        with pyro.plate("points", x.shape[0]):
            pyro.sample("latent", dist.Normal(torch.zeros(2), 1.0).to_event(1))

    idata = D.to_inference_data(model, guide, torch.randn(5), 3)
    assert idata.posterior["latent"].dims == ("chain", "draw", "datapoint", "latent_")
    assert json.loads(idata.posterior.attrs["dims"])["latent"] == "latent_"
    assert D.code_variable(idata) == "latent" and D.latent_activity(idata).dims == ("latent_",)


def test_active_units_of_a_user_guide_without_a_mean_match_the_closed_form():
    """A user's guide whose q(z|x) has no analytic mean (a transformed distribution): activity
    Cov_x(E_q[z|x]) comes from draws, and must match the closed form [Var(3x), 0]."""
    def model(x):
        with pyro.plate("rows", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("y", dist.Normal(z.sum(-1), 1.0), obs=x)

    def guide(x):
        loc = torch.stack([3 * x, torch.zeros_like(x)], -1)
        with pyro.plate("rows", x.shape[0]):
            pyro.sample("z", dist.TransformedDistribution(dist.Normal(torch.zeros_like(loc), 0.5),
                                                          [dist.transforms.AffineTransform(loc, 1.0)]).to_event(1))

    x = torch.randn(300, generator=torch.Generator().manual_seed(0))
    with pytest.raises(NotImplementedError):
        _ = dist.TransformedDistribution(dist.Normal(0.0, 1.0), []).mean  # so the draws are what is tested
    pyro.set_rng_seed(0)
    activity = latents.guide_activity(guide, x, num_samples=200)
    exact = torch.tensor([float((3 * x).var()), 0.0])
    torch.testing.assert_close(activity, exact, rtol=0.05, atol=0.01)   # draw noise: 0.25 / 200 per datapoint
    assert evaluate(model, guide, x, k=10, elbo_samples=1)["active_units"] == 1


def test_two_local_code_sites_get_active_units_each():
    def model(x):
        with pyro.plate("rows", x.shape[0]):
            a = pyro.sample("a", dist.Normal(torch.zeros(3), 1.0).to_event(1))
            b = pyro.sample("b", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("y", dist.Normal(a.sum(-1) + b.sum(-1), 1.0), obs=x)

    def guide(x):
        with pyro.plate("rows", x.shape[0]):
            # a[0] follows x (active), a[1:] and b copy the prior
            pyro.sample("a", dist.Normal(torch.stack([x, 0 * x, 0 * x], -1), 0.5).to_event(1))
            pyro.sample("b", dist.Normal(torch.zeros(x.shape[0], 2), 1.0).to_event(1))

    x = 3 * torch.randn(200)
    metrics = evaluate(model, guide, x, k=10, elbo_samples=1, sparsity=False)
    assert metrics["active_units_a"] == 1 and metrics["active_units_b"] == 0
    assert "active_units" not in metrics
    assert latents.local_vector_sites(guide, x) == ["a", "b"]
    with pytest.raises(ValueError, match=r"\['a', 'b'\]; pass site="):
        latents.guide_activity(guide, x)


# -- az.loo on a VAE's InferenceData (point 7) ----------------------------------------------------

def test_az_loo_of_a_vae_refuses_and_ppgen_compare_pairs_the_datapoints(user_vae):
    model, guide, _, x = user_vae
    pyro.set_rng_seed(2)
    idata = D.to_inference_data(model, guide, x, 20)
    # every latent is local: no log_likelihood group (its values would be equal across draws, k-hat inf)
    assert "log_likelihood" not in idata.groups() and "ppgen.compare" in idata.posterior.attrs["log_likelihood"]
    with pytest.raises(TypeError, match="log likelihood not found"):
        az.loo(idata)
    # the conditional log p(x | z) is kept apart: it is not what LOO needs
    assert idata.conditional_log_likelihood["obs"].dims == ("chain", "draw", "datapoint")

    # a worse guide: the same encoder with its scale tripled; paired differences against the hand-computed ones
    encoder = user_vae[2]

    def wide_guide(x):
        with pyro.plate("points", x.shape[0]):
            loc, log_scale = encoder(x).chunk(2, -1)
            pyro.sample("code", dist.Normal(loc, 3 * log_scale.exp()).to_event(1))

    good = D.importance_diagnostics(model, guide, x, 300)
    bad = D.importance_diagnostics(model, wide_guide, x, 300)
    table = ppgen.compare(bad, good, names=["wide", "trained"])
    sums = {"trained": float(good["log_px"].sum()), "wide": float(bad["log_px"].sum())}
    best, other = sorted(sums, key=sums.get, reverse=True)
    assert list(table.index) == [best, other] and table.loc[best, "elpd_diff"] == 0.0
    diff = (good["log_px"].values - bad["log_px"].values) * (1 if best == "trained" else -1)
    assert table.loc[other, "elpd_diff"] == pytest.approx(diff.sum())
    assert table.loc[other, "dse"] == pytest.approx(math.sqrt(len(diff) * diff.var()))
    assert table.loc[other, "dse"] < table.loc[other, "se"]  # pairing removes the datapoints' own spread
    assert table.loc["trained", "elpd"] == pytest.approx(sums["trained"])
    assert table.loc["trained", "khat_good"] == pytest.approx(float((good["khat"] < 0.5).mean()))
    assert table.loc["trained", "K"] == 300 and table.loc["trained", "n"] == x.shape[0]
    with pytest.raises(ValueError, match="datapoints"):
        ppgen.compare(good, D.importance_diagnostics(model, guide, x[:10], 50))


# -- global + local latents, against closed forms (point 6) ---------------------------------------

TAU, S, SIGMA = 1.0, 0.6, 0.5  # w ~ N(0, TAU^2 I); u_n ~ N(0, S^2); y_n ~ N(x_n . w + u_n, SIGMA^2)


def mixed_model(X, y):
    w = pyro.sample("w", dist.Normal(torch.zeros(X.shape[1], dtype=X.dtype), TAU).to_event(1))
    with pyro.plate("points", X.shape[0]):
        u = pyro.sample("effect", dist.Normal(torch.zeros((), dtype=X.dtype), S))
        pyro.sample("y", dist.Normal((X * w).sum(-1) + u, SIGMA), obs=y)


def posterior_of_w(X, y, noise2):
    V = torch.linalg.inv(X.T @ X / noise2 + torch.eye(X.shape[1], dtype=X.dtype) / TAU**2)
    return V @ X.T @ y / noise2, V


def exact_guide(X_fit, y_fit):
    """q = the exact posterior: p(w | y) and p(u_n | w, y_n)."""
    m, V = posterior_of_w(X_fit, y_fit, SIGMA**2 + S**2)
    shrink = S**2 / (S**2 + SIGMA**2)

    def guide(X, y):
        w = pyro.sample("w", dist.MultivariateNormal(m, V))
        with pyro.plate("points", X.shape[0]):
            pyro.sample("effect", dist.Normal(shrink * (y - (X * w).sum(-1)), math.sqrt(shrink) * SIGMA))

    return guide


@pytest.fixture(scope="module")
def mixed():
    g = torch.Generator().manual_seed(3)
    n = 30
    X = torch.randn(n, 2, generator=g, dtype=torch.float64)
    y = X @ torch.tensor([1.0, -0.5], dtype=torch.float64) + (S**2 + SIGMA**2) ** 0.5 * torch.randn(n, generator=g,
                                                                                                       dtype=torch.float64)
    return X, y, exact_guide(X, y)


def predictive_lpd(X_fit, y_fit, X, y):
    """log p(y_n | y_fit) per datapoint: w from its exact posterior given the fit data, u_n integrated out."""
    m, V = posterior_of_w(X_fit, y_fit, SIGMA**2 + S**2)
    return dist.Normal(X @ m, (SIGMA**2 + S**2 + ((X @ V) * X).sum(-1)).sqrt()).log_prob(y)


def held_out(n=40, seed=4):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 2, generator=g, dtype=torch.float64)
    return X, X @ torch.tensor([1.0, -0.5], dtype=torch.float64) + (S**2 + SIGMA**2) ** 0.5 * torch.randn(
        n, generator=g, dtype=torch.float64)


def log_evidence(X, y):
    n = len(y)
    cov = (SIGMA**2 + S**2) * torch.eye(n, dtype=X.dtype) + TAU**2 * X @ X.T
    return float(dist.MultivariateNormal(torch.zeros(n, dtype=X.dtype), cov).log_prob(y))


def test_evaluate_of_global_and_local_latents_matches_the_closed_form(mixed):
    X, y, guide = mixed
    X_test, y_test = held_out()
    metrics = evaluate(mixed_model, guide, (X_test, y_test), fit_data=(X, y), k=400)
    assert metrics["global_latents"] == ["w"]
    # held-out numbers: the predictive density of each held-out datapoint, u_n integrated out
    lpd = predictive_lpd(X, y, X_test, y_test).mean()
    assert metrics["test_iwae_nats"] == pytest.approx(float(lpd), abs=0.02)
    assert metrics["test_elbo_nats"] <= metrics["test_iwae_nats"] + 1e-9
    # the fit numbers are of the fit data, whatever data is evaluated: with the exact posterior as
    # proposal every joint weight equals p(y)
    assert metrics["fit_iwae_nats"] == pytest.approx(log_evidence(X, y) / len(y), abs=1e-6)
    assert metrics["fit_elbo_nats"] == pytest.approx(log_evidence(X, y) / len(y), abs=1e-6)
    # without fit_data they are not computed (on held-out data they would judge q against a
    # posterior it never saw: log p(y_test) under q(w | y) is not log p(y_test))
    alone = evaluate(mixed_model, guide, (X_test, y_test), k=50)
    assert not any(key.startswith("fit_") for key in alone)


def test_importance_diagnostics_of_global_and_local_latents(mixed):
    X, y, guide = mixed
    X_test, y_test = held_out()
    diag = D.importance_diagnostics(mixed_model, guide, (X_test, y_test), 500, fit_data=(X, y))
    assert diag.attrs["global_latents"] == "w"
    assert np.isneginf(diag.attrs["global_khat"])  # q(w, u) is the posterior given (X, y): constant weights
    assert (diag["khat"].values < D.KHAT_GOOD).all()  # p(y_n | w) under q(w): light tails
    np.testing.assert_allclose(diag["log_px"].values, predictive_lpd(X, y, X_test, y_test).numpy(), atol=0.05)
    # judged against the posterior given other data, the same guide is no longer exact
    other = D.importance_diagnostics(mixed_model, guide, (X_test, y_test), 500, fit_data=(X_test, y_test))
    assert np.isfinite(other.attrs["global_khat"])
    unjudged = D.importance_diagnostics(mixed_model, guide, (X_test, y_test), 50)
    assert np.isnan(unjudged.attrs["global_khat"]) and "fit_data" in unjudged.attrs["global_khat_note"]


def test_guide_corrected_loo_of_global_and_local_latents_matches_exact_loo(mixed):
    X, y, guide = mixed
    pyro.set_rng_seed(0)
    idata = D.to_inference_data(mixed_model, guide, (X, y), 3000)
    assert idata.posterior["effect"].dims == ("chain", "draw", "datapoint")
    assert "one-draw" in idata.log_likelihood.attrs["pointwise"]
    loo = D.guide_corrected_loo(idata)
    exact = []
    for i in range(len(y)):
        keep = torch.arange(len(y)) != i
        m, V = posterior_of_w(X[keep], y[keep], SIGMA**2 + S**2)
        exact.append(float(dist.Normal(X[i] @ m, (SIGMA**2 + S**2 + X[i] @ V @ X[i]).sqrt()).log_prob(y[i])))
    np.testing.assert_allclose(loo["loo_i"].values, exact, atol=0.05)
    assert (loo["pareto_k"].values < D.KHAT_BAD).all()


def test_the_remaining_error_names_the_one_function_that_applies(user_vae):
    model, guide, _, x = user_vae
    with pytest.raises(ValueError, match="every latent of this model is local.*use importance_diagnostics"):
        D.guide_corrected_loo(D.to_inference_data(model, guide, x, 5))


# -- the report of a pair you wrote (point 8) ----------------------------------------------------

def test_report_of_a_user_pair_writes_a_file_and_shows_inline(user_vae, tmp_path):
    from ppgen import report

    assert report is ppgen.report and callable(report)
    model, guide, _, x = user_vae
    out = report(model, guide, x, out=tmp_path / "report.html", num_samples=10, importance_samples=50, max_obs=30)
    assert out.path == tmp_path / "report.html" and out.path.is_file()
    assert out.posterior_path == tmp_path / "report.nc"
    fragment = out._repr_html_()
    assert fragment.startswith('<div class="ppgen-report">')
    for sid in ("numbers", "verdict", "khat", "kl", "ppc"):
        assert f'id="{sid}"' in fragment, sid
    assert "active units of code" in fragment
    assert az.from_netcdf(str(out.posterior_path)).vi_diagnostics.sizes["datapoint"] == 30


def test_report_of_global_and_local_latents(mixed, tmp_path):
    X, y, guide = mixed
    X_test, y_test = held_out()
    out = ppgen.report(mixed_model, guide, (X_test, y_test), fit_data=(X, y), out=tmp_path / "mixed.html",
                       num_samples=20, importance_samples=100)
    assert "joint k-hat" in out.html and "predictive density" in out.html and "-inf (exact)" in out.html
    unjudged = ppgen.report(mixed_model, guide, (X_test, y_test), out=tmp_path / "unjudged.html", num_samples=20,
                            importance_samples=50)
    assert "was not judged: pass the data it was trained on as fit_data" in unjudged.html


def test_report_arguments_are_checked(user_vae, tmp_path):
    model, guide, _, x = user_vae
    with pytest.raises(TypeError, match="run directory"):
        ppgen.report(model, guide)
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        ppgen.report(tmp_path)


def test_per_step_sites_are_one_variable(vrnn_small):
    model, guide, x, mask = vrnn_small
    assert list(latents.latent_variables(guide, x, mask)) == ["z"]
    draws = latents.variable_draws(guide, x, mask, sites=latents.latent_variables(guide, x, mask)["z"], num_samples=4)
    assert draws.shape == (4, 6, 9, 3)
    assert torch.isnan(draws[:, ~mask]).all() and not torch.isnan(draws[:, mask]).any()  # padded steps left out
    metrics = evaluate(model, guide, (x, mask), k=4, elbo_samples=1, sparsity=True)
    assert 0 <= metrics["active_units"] <= 3 and 0.0 <= metrics["code_sparsity"] <= 1.0
    assert not any(key.startswith("active_units_") for key in metrics)


@pytest.fixture
def vrnn_small():
    from ppgen.guides import GUIDES
    from ppgen.models.vrnn import VRNN

    torch.manual_seed(0)
    lengths = torch.tensor([9, 7, 4, 9, 2, 6])
    mask = torch.arange(9)[None] < lengths[:, None]
    x = (torch.rand(6, 9, 10) < 0.25).float() * mask[..., None]
    model = VRNN(10, 3, 16)
    return model, GUIDES["vrnn_filtering"].for_model(model), x, mask
