"""Conformance with user-written Pyro pairs: plain functions, nn.Modules calling pyro.param,
PyroModules with PyroParam/PyroSample, autoguides; global and local latents with custom site
and plate names. Each trains with a falling loss and no error, and goes through the whole
pipeline (fit, evaluate, diagnostics, report); the minibatch scaling of global latents is
checked against the conjugate closed form."""
import math

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.distributions import constraints
from pyro.infer.autoguide import (AutoDiagonalNormal, AutoIAFNormal, AutoLowRankMultivariateNormal,
                                  AutoMultivariateNormal, AutoNormal, AutoNormalMessenger)
from pyro.nn import PyroModule, PyroParam, PyroSample
from torch import nn

import ppgen
from ppgen import diagnostics as Dg
from ppgen.evaluate import evaluate
from ppgen.guides import DiagonalNormalGuide, SiteMismatchError, check_sites
from ppgen.models import VAE
from ppgen.models.vrnn import VRNN
from ppgen.infer import fit
from ppgen.infer.checkpoint import load_checkpoint
from ppgen.infer.fit import DataScaling, elbo_per_datapoint, pair_parameters

SETTINGS = dict(progress=False, device="cpu", seed=1)
N, D, SIGMA = 500, 3, 1.0


def regression_data(n=N, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, D, generator=g)
    y = X @ torch.tensor([1.0, -2.0, 0.5]) + SIGMA * torch.randn(n, generator=g)
    return X, y


def regression(X, y):
    """w ~ N(0, I_D) (global); y_n ~ N(x_n . w, SIGMA^2) in the plate "data"."""
    w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([D]).to_event(1))
    with pyro.plate("data", X.shape[0]):
        pyro.sample("y", dist.Normal(X @ w, SIGMA), obs=y)


def falls(history) -> bool:
    return history.train_elbo[-1] > history.train_elbo[0] and all(map(math.isfinite, history.train_elbo))


# -- point 1: global latents under minibatches, against the closed form ------------------------
def test_global_latent_posterior_matches_closed_form_at_any_batch_size():
    X, y = regression_data()
    precision = torch.eye(D) + X.T @ X / SIGMA**2          # exact posterior N(mean, precision^-1)
    mean = torch.linalg.solve(precision, X.T @ y / SIGMA**2)
    sd = precision.diagonal().rsqrt()                       # the mean-field optimum's sd
    elbos = []
    for batch_size, epochs in ((N, 600), (N // 10, 60)):    # the same number of steps
        pyro.clear_param_store()
        guide = AutoNormal(regression)
        history = fit(regression, guide, (X, y), epochs=epochs, batch_size=batch_size, lr=0.1,
                      lr_schedule="cosine", **SETTINGS)
        ratio = guide.scales.w.detach() / sd                # unscaled minibatches: ~sqrt(N/B) = 3.2
        assert ratio.log().mean().exp() == pytest.approx(1.0, abs=0.15), (batch_size, ratio)
        assert ((ratio > 0.7) & (ratio < 1.35)).all(), (batch_size, ratio)
        assert ((guide.locs.w.detach() - mean).abs() < 3 * sd).all()
        elbos.append(history.train_elbo[-1])
        # the held-out ELBO per datapoint counts the global KL once whatever the batch size
        # (unscaled batches would count it N/B times: ~0.15 nats per datapoint here)
        by_batches = [elbo_per_datapoint(regression, guide, (X, y), b) for b in (N, N // 10)]
        assert by_batches[0] == pytest.approx(by_batches[1], abs=0.03)
    assert elbos[0] == pytest.approx(elbos[1], abs=0.03)  # both the full-data ELBO / N


def test_scaling_is_for_global_models_only_and_respects_a_subsampling_plate():
    X, y = regression_data(40)
    assert DataScaling.of(regression, (X[:2], y[:2]), 40, 10).active

    def local_only(X, y):
        with pyro.plate("points", X.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("y", dist.Normal(z, 1.0), obs=y)

    def subsampling(X, y):
        w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([D]).to_event(1))
        with pyro.plate("data", 40, subsample_size=X.shape[0]):  # scales by 40 / B by itself
            pyro.sample("y", dist.Normal(X @ w, SIGMA), obs=y)

    scaling = DataScaling.of(local_only, (X[:2], y[:2]), 40, 10)
    assert not scaling.active and scaling.structure.local == ("z",) and scaling.structure.data_plate == "points"
    scaling = DataScaling.of(subsampling, (X[:2], y[:2]), 40, 10)
    assert not scaling.active and scaling.structure.subsampled and scaling.structure.global_latents == ("w",)

    def no_plate(X, y):
        w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([D]).to_event(1))
        pyro.sample("y", dist.Normal(X @ w, SIGMA).to_event(1), obs=y)

    with pytest.raises(ValueError, match="no observed site in a plate at dim -1"):
        fit(no_plate, AutoNormal(no_plate), (X, y), epochs=1, batch_size=10, **SETTINGS)


# -- the user-style pairs ------------------------------------------------------------------------
def factor_analysis(x):
    """Factor analysis with z marginalised: W ~ N(0, 1) [D, K] global, x_n ~ N(0, W W^T + diag psi)."""
    d = x.shape[-1]
    W = pyro.sample("W", dist.Normal(0.0, 1.0).expand([d, 2]).to_event(2))
    psi = pyro.param("psi", torch.ones(d), constraint=constraints.positive)
    with pyro.plate("data", x.shape[0]):
        pyro.sample("x", dist.LowRankMultivariateNormal(torch.zeros(d), W, psi), obs=x)


def fa_data(n=300, d=6):
    g = torch.Generator().manual_seed(2)
    return torch.randn(n, 2, generator=g) @ (2 * torch.randn(2, d, generator=g)) + 0.3 * torch.randn(n, d, generator=g)


def test_factor_analysis_as_functions_with_autonormal():
    x = fa_data()
    guide = AutoNormal(factor_analysis)
    history = fit(factor_analysis, guide, x, epochs=15, batch_size=50, lr=0.05, **SETTINGS)
    assert falls(history)
    assert not torch.allclose(pyro.param("psi"), torch.ones(6))   # a model pyro.param is trained


def beta_vae_pair(d=8, k=2):
    """A VAE written from scratch as functions: latent "code", observed "obs", plate "points"."""
    decoder = nn.Sequential(nn.Linear(k, 16), nn.Tanh(), nn.Linear(16, 2 * d))
    encoder = nn.Sequential(nn.Linear(d, 16), nn.Tanh(), nn.Linear(16, 2 * k))

    def model(x):
        pyro.module("decoder", decoder)
        with pyro.plate("points", x.shape[0]):
            code = pyro.sample("code", dist.Normal(0.0, 1.0).expand([k]).to_event(1))
            a, b = nn.functional.softplus(decoder(code)).add(1e-3).chunk(2, -1)
            pyro.sample("obs", dist.Beta(a, b).to_event(1), obs=x)

    def guide(x):
        pyro.module("encoder", encoder)
        with pyro.plate("points", x.shape[0]):
            loc, scale = encoder(x).chunk(2, -1)
            pyro.sample("code", dist.Normal(loc, nn.functional.softplus(scale) + 1e-3).to_event(1))

    return model, guide


def test_vae_from_scratch_with_beta_likelihood_and_custom_names():
    torch.manual_seed(0)
    x = torch.rand(200, 8).mul(0.9).add(0.05)
    model, guide = beta_vae_pair()
    history = fit(model, guide, x[:160], x[160:], epochs=6, batch_size=40, lr=1e-2, **SETTINGS)
    assert falls(history) and all(map(math.isfinite, history.val_elbo))
    assert not DataScaling.of(model, (x[:2],), 200, 40).active   # all latents local: per-datapoint objective


class LoadingModel(nn.Module):
    """An nn.Module whose loading matrix is a pyro.param: model.parameters() is empty."""

    def forward(self, x):
        W = pyro.param("loading", lambda: 0.1 * torch.randn(x.shape[-1], 2))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
            pyro.sample("x", dist.Normal(z @ W.T, 0.5).to_event(1), obs=x)


class Encoder(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.net = nn.Linear(d, 4)

    def forward(self, x):
        loc, scale = self.net(x).chunk(2, -1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, nn.functional.softplus(scale) + 1e-3).to_event(1))


def test_pyro_param_inside_an_nn_module_is_optimised():
    x = fa_data()
    model, guide = LoadingModel(), Encoder(6)
    assert not list(model.parameters())
    check_sites(model, guide, x[:2])
    before = pyro.param("loading").detach().clone()
    history = fit(model, guide, x, epochs=5, batch_size=50, lr=1e-2, **SETTINGS)
    assert falls(history)
    assert not torch.equal(pyro.param("loading").detach(), before)


def test_a_pair_without_parameters_is_refused():
    def model(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(0.0, 1.0), obs=x)

    with pytest.raises(ValueError, match="model model and guide <lambda> have no parameters to optimise"):
        pair_parameters(model, lambda x: None, torch.zeros(3))
    with pytest.raises(ValueError, match="no parameters to optimise"):
        fit(model, lambda x: None, torch.zeros(30), epochs=1, **SETTINGS)


class BayesianRegression(PyroModule):
    def __init__(self):
        super().__init__()
        self.w = PyroSample(dist.Normal(0.0, 1.0).expand([D]).to_event(1))
        self.sigma = PyroParam(torch.tensor(2.0), constraint=constraints.positive)

    def forward(self, X, y):
        w = self.w
        with pyro.plate("data", X.shape[0]):
            pyro.sample("y", dist.Normal(X @ w, self.sigma), obs=y)


@pytest.mark.parametrize("autoguide", [AutoDiagonalNormal, AutoMultivariateNormal, AutoLowRankMultivariateNormal,
                                       AutoNormal, AutoNormalMessenger, AutoIAFNormal])
def test_pyro_module_with_autoguides(autoguide):
    X, y = regression_data(200)
    model = BayesianRegression()
    guide = autoguide(model)
    history = fit(model, guide, (X, y), epochs=8, batch_size=50, lr=0.05, **SETTINGS)
    assert falls(history)
    assert model.sigma.item() != pytest.approx(2.0)     # the PyroParam is trained


def mixed_model(X, y, idx):
    """Global weight w ~ N(0, I); a local effect u_n ~ N(0, 0.5^2) per datapoint."""
    w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([D]).to_event(1))
    with pyro.plate("data", X.shape[0]):
        u = pyro.sample("u", dist.Normal(0.0, 0.5))
        pyro.sample("y", dist.Normal(X @ w + u, SIGMA), obs=y)


def mixed_guide(X, y, idx, n=200):
    """Mean-field: w from pyro.params, u_n from per-datapoint pyro.params picked by ``idx``."""
    w_loc = pyro.param("w_loc", torch.zeros(D))
    w_scale = pyro.param("w_scale", torch.full((D,), 0.1), constraint=constraints.positive)
    pyro.sample("w", dist.Normal(w_loc, w_scale).to_event(1))
    u_loc = pyro.param("u_loc", torch.zeros(n))
    u_scale = pyro.param("u_scale", torch.full((n,), 0.1), constraint=constraints.positive)
    with pyro.plate("data", X.shape[0]):
        pyro.sample("u", dist.Normal(u_loc[idx], u_scale[idx]))


def test_regression_with_global_weight_and_local_effects():
    X, y = regression_data(200)
    data = (X, y, torch.arange(200))
    scaling = DataScaling.of(mixed_model, tuple(t[:2] for t in data), 200, 50)
    assert scaling.active and scaling.structure.local == ("u",) and scaling.structure.global_latents == ("w",)
    history = fit(mixed_model, mixed_guide, data, epochs=20, batch_size=50, lr=0.05, **SETTINGS)
    assert falls(history)


def test_plain_function_pair_resumes_exactly(tmp_path):
    X, y = regression_data(200)
    data = (X, y, torch.arange(200))
    run = dict(batch_size=50, lr=0.05, **SETTINGS)

    h1 = fit(mixed_model, mixed_guide, data, epochs=4, checkpoint=tmp_path / "a.pt", **run)
    first = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
    pyro.clear_param_store()                                  # as a fresh process
    fit(mixed_model, mixed_guide, data, epochs=2, checkpoint=tmp_path / "b.pt", **run)
    pyro.clear_param_store()
    h3 = fit(mixed_model, mixed_guide, data, epochs=4, checkpoint=tmp_path / "b.pt", resume=True, **run)
    assert h1.train_elbo == h3.train_elbo
    for name, value in pyro.get_param_store().items():
        assert torch.equal(value.detach(), first[name]), name
    saved = load_checkpoint(tmp_path / "b.pt")                # weights_only: plain tensors by name
    assert set(saved["params"]) == {"w_loc", "w_scale", "u_loc", "u_scale"} and "model" not in saved


# -- point 9: a pair that does not fit is named before running -----------------------------------
def test_a_guide_that_cannot_run_on_the_models_arguments_is_named():
    X, y = regression_data(10)
    model, guide = beta_vae_pair()
    with pytest.raises(SiteMismatchError, match=r"the guide could not be run on the model's arguments "
                                                r"\(X: tensor \(2, 3\), y: tensor \(2,\)\).*model regression, guide guide.*"
                                                r"TypeError.*the model ran and has latent sites \['w'\]"):
        fit(regression, guide, (X, y), epochs=1, **SETTINGS)


def test_a_vae_guide_on_a_vrnn_is_named_not_a_raw_type_error():
    x, mask = torch.rand(2, 4, 5).round(), torch.ones(2, 4, dtype=torch.bool)
    guide = DiagonalNormalGuide.for_model(VAE(5, 3, hidden=8), hidden=8)
    with pytest.raises(SiteMismatchError, match=r"the guide could not be run on the model's arguments "
                                                r"\(x: tensor \(2, 4, 5\), mask: tensor \(2, 4\)\) "
                                                r"\[model VRNN, guide DiagonalNormalGuide\]: TypeError.*"
                                                r"the model ran and has latent sites \['z_0'"):
        check_sites(VRNN(5, 3, 8), guide, x, mask)


# -- the whole pipeline (fit, evaluate, diagnostics, report) over user-style pairs ---------------
class BroadcastingRegression(BayesianRegression):
    """The PyroModule regression written to broadcast over leading draw dimensions, as
    evaluation's vectorized particles need (``(X * w).sum(-1)``, not ``X @ w``)."""

    def forward(self, X, y):
        w = self.w
        with pyro.plate("data", X.shape[0]):
            pyro.sample("y", dist.Normal((X * w).sum(-1), self.sigma), obs=y)


def broadcasting_mixed_model(X, y, idx):
    w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([D]).to_event(1))
    with pyro.plate("data", X.shape[0]):
        u = pyro.sample("u", dist.Normal(0.0, 0.5))
        pyro.sample("y", dist.Normal((X * w).sum(-1) + u, SIGMA), obs=y)


def user_pairs():
    """name -> (model, guide, train data, held-out data), one per kind of pair a user writes."""
    X, y = regression_data(240)
    fa = fa_data(240)
    beat = torch.rand(240, 8, generator=torch.Generator().manual_seed(5)).mul(0.9).add(0.05)
    regression_pairs = {f"PyroModule + {auto.__name__}": auto for auto in (
        AutoDiagonalNormal, AutoMultivariateNormal, AutoLowRankMultivariateNormal, AutoNormal, AutoNormalMessenger,
        AutoIAFNormal)}
    pairs = {"functions + AutoNormal (factor analysis, global W)": (factor_analysis, AutoNormal(factor_analysis),
                                                                     fa[:200], fa[200:]),
             "functions (VAE, Beta likelihood, custom names)": (*beta_vae_pair(), beat[:200], beat[200:]),
             "nn.Module with pyro.param + nn.Module guide": (LoadingModel(), Encoder(6), fa[:200], fa[200:])}
    for name, auto in regression_pairs.items():
        model = BroadcastingRegression()
        pairs[name] = (model, auto(model), (X[:200], y[:200]), (X[200:], y[200:]))
    idx = torch.arange(240)
    pairs["functions with pyro.param (global w, local u)"] = (
        broadcasting_mixed_model, lambda X, y, i: mixed_guide(X, y, i, n=240), (X[:200], y[:200], idx[:200]),
        (X[200:], y[200:], idx[200:]))
    return pairs


@pytest.mark.parametrize("name", list(user_pairs()))
def test_the_whole_pipeline_runs_on_every_kind_of_user_pair(name, tmp_path):
    model, guide, train, test = user_pairs()[name]
    history = fit(model, guide, train, epochs=4, batch_size=50, lr=0.02, **SETTINGS)
    assert falls(history)
    metrics = evaluate(model, guide, test, fit_data=train, k=50)
    assert math.isfinite(metrics["test_elbo_nats"]) and metrics["test_iwae_nats"] >= metrics["test_elbo_nats"] - 1.0
    if metrics.get("global_latents"):
        assert math.isfinite(metrics["fit_iwae_nats"])
    diag = Dg.importance_diagnostics(model, guide, test, 50, fit_data=train)
    assert np.isfinite(diag["log_px"].values).all() and diag.sizes["datapoint"] == 40
    idata = Dg.to_inference_data(model, guide, train, 10)
    assert set(idata.groups()) >= {"posterior", "conditional_log_likelihood", "observed_data", "sample_stats"}
    assert ("log_likelihood" in idata.groups()) == bool(metrics.get("global_latents"))  # LOO only for globals
    out = ppgen.report(model, guide, test, fit_data=train, out=tmp_path / "report.html", num_samples=10,
                       importance_samples=50, history=history)
    assert out.path.is_file() and 'id="verdict"' in out.html
    assert az.from_netcdf(str(out.posterior_path)).vi_diagnostics.sizes["datapoint"] == 40
