"""Posterior diagnostics: k-hat and log p(x) against closed-form PPCA, the InferenceData of
every kind of model, guide-corrected LOO against exact LOO, latent-space health."""
import math
import warnings

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
import xarray as xr
from pyro.infer.autoguide import AutoNormal
from torch import nn

from ppgen import diagnostics as D
from ppgen.guides import GUIDES, DiagonalNormalGuide
from ppgen.infer import History, fit
from ppgen.models import VAE
from ppgen.models.vrnn import VRNN
from ppgen.guides.ppca import ExactPPCAGuide
from ppgen.models.ppca import ppca_log_likelihood, ppca_mle, ppca_posterior


# -- probabilistic PCA: the guide is (a scaled version of) the exact posterior ------------------

def ppca_vae(W, mu, sigma2):
    """The VAE that is PPCA, with its parameters set to (W, mu, sigma2)."""
    d, q = W.shape
    model = VAE(d, q, decoder=nn.Linear(q, d), likelihood="normal", likelihood_kwargs={"scale": "isotropic"})
    model = model.to(W.dtype)
    with torch.no_grad():
        model.decoder.weight.copy_(W)
        model.decoder.bias.copy_(mu)
        model.likelihood.log_scale.fill_(0.5 * math.log(float(sigma2)))
    return model


@pytest.fixture(scope="module")
def ppca():
    g = torch.Generator().manual_seed(0)
    n, d, q = 200, 5, 2
    W_true = torch.randn(d, q, generator=g, dtype=torch.float64)
    x = (torch.randn(n, q, generator=g, dtype=torch.float64) @ W_true.T + 1.0
         + 0.5 * torch.randn(n, d, generator=g, dtype=torch.float64))
    W, mu, sigma2 = ppca_mle(x, q)
    return ppca_vae(W, mu, sigma2), x, ppca_log_likelihood(x, W, mu, sigma2).numpy()


def test_ppca_mle_maximises_the_exact_likelihood(ppca):
    model, x, exact = ppca
    W, mu, sigma2 = ppca_mle(x, 2)
    best = ppca_log_likelihood(x, W, mu, sigma2).sum()
    for W2, s2 in ((W * 1.1, sigma2), (W, sigma2 * 1.2), (W @ torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=W.dtype), sigma2)):
        assert ppca_log_likelihood(x, W2, mu, s2).sum() <= best + 1e-9
    mean, cov = ppca_posterior(x[:3], W, mu, sigma2)
    assert mean.shape == (3, 2) and cov.shape == (2, 2)
    assert torch.allclose(cov, cov.T) and bool((torch.linalg.eigvalsh(cov) > 0).all())


def test_exact_posterior_guide_has_small_khat_and_exact_log_px(ppca):
    model, x, exact = ppca
    diag = D.importance_diagnostics(model, ExactPPCAGuide(model), x, 500)
    assert D.khat_bands(diag["khat"])["good"] >= 0.95
    err = np.abs(diag["log_px"].values - exact)
    assert (err <= 3 * diag["log_px_se"].values + 1e-6).all(), err.max()
    assert np.abs(diag["gap"].values).max() < 1e-6  # q = p(z|x): the ELBO is tight


def test_overdispersed_guide_is_good_and_its_standard_errors_cover_the_truth(ppca):
    model, x, exact = ppca
    diag = D.importance_diagnostics(model, ExactPPCAGuide(model, scale=1.3), x, 1000)
    assert D.khat_bands(diag["khat"])["good"] >= 0.9
    z = (diag["log_px"].values - exact) / diag["log_px_se"].values
    assert np.mean(np.abs(z) <= 3) >= 0.95
    assert 0.5 < np.mean(np.abs(z)) < 1.2  # errors are of the size the standard error claims


def test_shrunk_guide_gets_khat_above_07_and_its_elbo_is_short_by_the_kl(ppca):
    model, x, exact = ppca
    s, q = 0.3, 2
    diag = D.importance_diagnostics(model, ExactPPCAGuide(model, scale=s), x, 1000)
    assert D.khat_bands(diag["khat"])["bad"] > 0.5
    kl = 0.5 * q * (s**2 - 1 - 2 * math.log(s))  # KL(N(m, s^2 C) || N(m, C))
    assert abs(np.mean(diag["elbo"].values - (exact - kl))) < 0.05
    assert np.mean(diag["log_px"].values) < np.mean(exact)  # heavy-tailed weights: IS underestimates
    assert np.mean(diag["gap"].values) > 0.3


def test_psis_khat_recovers_known_pareto_tails():
    rng = np.random.default_rng(0)
    for k in (0.3, 0.9):
        log_w = -k * np.log(rng.uniform(size=(2000, 20)))  # [K, N], draws first; w = U^-k has tail shape k
        khat = D.psis_khat(log_w)
        assert khat.shape == (20,)
        assert abs(np.mean(khat) - k) < 0.1, (k, khat.mean())
    assert np.isneginf(D.psis_khat(np.full((100, 2), -3.0))).all()  # exact guide: constant weights


def test_khat_bands_and_worst_datapoints():
    khat = np.array([-np.inf, 0.1, 0.49, 0.5, 0.7, 0.71, np.nan, 2.0])
    bands = D.khat_bands(khat)
    assert bands == pytest.approx({"good": 3 / 8, "ok": 2 / 8, "bad": 3 / 8})
    diag = xr.Dataset({"khat": ("datapoint", khat), "gap": ("datapoint", np.arange(8.0))}, coords={"datapoint": np.arange(8) + 100})
    assert list(D.worst_datapoints(diag, 3)["datapoint"].values) == [106, 107, 105]


# -- InferenceData for the VAE, the VRNN and a global-latent model -------------------------------

@pytest.fixture(scope="module")
def vae_idata(digits):
    torch.manual_seed(0)
    model = VAE.for_data(digits, 4, hidden=32)
    guide = DiagonalNormalGuide.for_model(model, hidden=32)
    x = digits.test[:50]
    history = History(epoch=[1, 2], train_elbo=[-150.0, -140.0], val_elbo=[-149.0, -141.0], beta=[1.0, 1.0],
                      lr=[1e-3, 1e-3], seconds=[0.5, 0.5], step_loss=[160.0, 150.0, 145.0], best_epoch=2,
                      best_val_elbo=-141.0)
    idata = D.to_inference_data(model, guide, x, 30, history=history, obs_index=np.arange(1350, 1400))
    return model, guide, x, idata


def test_vae_inference_data_groups_dims_and_coords(vae_idata):
    model, guide, x, idata = vae_idata
    assert {"posterior", "posterior_predictive", "conditional_log_likelihood", "observed_data", "sample_stats",
            "training"} <= set(idata.groups())
    assert "log_likelihood" not in idata.groups()  # every latent local: see LOCAL_LOO_NOTE
    assert idata.posterior["z"].dims == ("chain", "draw", "datapoint", "latent")
    assert idata.posterior["z"].shape == (1, 30, 50, 4)
    assert idata.posterior_predictive["x"].dims == ("chain", "draw", "datapoint", "feature")
    assert idata.conditional_log_likelihood["x"].dims == ("chain", "draw", "datapoint")
    assert idata.observed_data["x"].dims == ("datapoint", "feature")
    assert list(idata.posterior["datapoint"].values) == list(range(1350, 1400))
    assert list(idata.posterior["latent"].values) == [0, 1, 2, 3]
    assert list(idata.posterior["draw"].values) == list(range(30)) and list(idata.posterior["chain"].values) == [0]
    np.testing.assert_array_equal(idata.observed_data["x"].values, x.numpy())
    assert "constant_data" not in idata.groups()  # x is the observed variable, not a covariate
    assert list(idata.training["step_elbo"].values) == [-160.0, -150.0, -145.0]
    assert list(idata.training["val_elbo"].values) == [-149.0, -141.0]
    assert not any(name in idata.posterior.attrs for name in ("r_hat", "ess"))


def test_vae_inference_data_values_agree_with_the_model(vae_idata):
    model, guide, x, idata = vae_idata
    z = torch.as_tensor(idata.posterior["z"].values[0])                       # [draw, obs, latent]
    with torch.no_grad():
        log_lik = model.decode(z).log_prob(x)                                 # [draw, obs]
        log_prior = model.prior().log_prob(z)
        log_q = guide.posterior(x).log_prob(z)
    np.testing.assert_allclose(idata.conditional_log_likelihood["x"].values[0], log_lik.numpy(), rtol=1e-4, atol=1e-3)
    assert "log p(x_i)" in idata.posterior.attrs["log_likelihood"]  # why there is no log_likelihood group
    np.testing.assert_allclose(idata.sample_stats["lp"].values[0], (log_lik + log_prior).sum(-1).numpy(), rtol=1e-5)
    np.testing.assert_allclose(idata.sample_stats["log_q"].values[0], log_q.sum(-1).numpy(), rtol=1e-4, atol=1e-2)
    replicated = idata.posterior_predictive["x"].values
    assert set(np.unique(replicated)) <= set(range(17))                       # draws of the categorical p(x|z)


@pytest.fixture(scope="module")
def vrnn_case():
    torch.manual_seed(0)
    lengths = torch.tensor([9, 7, 4, 9, 2, 6])
    mask = torch.arange(9)[None] < lengths[:, None]
    x = (torch.rand(6, 9, 10) < 0.25).float() * mask[..., None]
    model = VRNN(10, 3, 16)
    guide = GUIDES["vrnn_filtering"].for_model(model)
    return model, guide, x, mask, D.to_inference_data(model, guide, (x, mask), 20)


def test_vrnn_inference_data_stacks_steps_into_time_and_masks_padding(vrnn_case):
    model, guide, x, mask, idata = vrnn_case
    z, xrep, obs = idata.posterior["z"], idata.posterior_predictive["x"], idata.observed_data["x"]
    assert z.dims == ("chain", "draw", "datapoint", "time", "latent") and z.shape == (1, 20, 6, 9, 3)
    assert xrep.dims == ("chain", "draw", "datapoint", "time", "feature") and xrep.shape == (1, 20, 6, 9, 10)
    assert obs.dims == ("datapoint", "time", "feature")
    assert idata.conditional_log_likelihood["x"].dims == ("chain", "draw", "datapoint")
    assert not any(name.startswith(("z_", "x_")) for g in ("posterior", "posterior_predictive")
                   for name in idata[g].data_vars)
    padded = ~mask.numpy()
    assert np.isnan(z.values[0, :, padded]).all() and not np.isnan(z.values[0, :, ~padded]).any()
    assert np.isnan(obs.values[padded]).all()
    np.testing.assert_array_equal(obs.values[~padded], x.numpy()[~padded])
    assert set(np.unique(xrep.values[0, :, ~padded])) <= {0.0, 1.0}
    assert np.isfinite(idata.conditional_log_likelihood["x"].values).all()
    np.testing.assert_array_equal(idata.constant_data["mask"].values, mask.numpy().astype(np.uint8))


def test_vrnn_kl_per_time_step(vrnn_case):
    model, guide, x, mask, _ = vrnn_case
    kl = D.latent_kl(model, guide, (x, mask), num_samples=10)
    assert kl["z"].dims == ("datapoint", "time") and kl["z_per_dim"].dims == ("datapoint", "time", "latent")
    assert np.isnan(kl["z"].values[~mask.numpy()]).all()
    real = kl["z"].values[mask.numpy()]
    assert np.isfinite(real).all() and real.mean() > 0
    np.testing.assert_allclose(kl["z_per_dim"].sum("latent").values[mask.numpy()], real, rtol=1e-4, atol=1e-4)


class BayesianLinearRegression(nn.Module):
    """w ~ N(0, tau^2 I) (site "w", global); y_n ~ N(x_n . w, sigma^2) (site "y", plate "data")."""

    tau, sigma = 1.0, 0.5

    def forward(self, X, y):
        w = pyro.sample("w", dist.Normal(torch.zeros(X.shape[1]), self.tau).to_event(1))
        with pyro.plate("data", X.shape[0]):
            pyro.sample("y", dist.Normal((X * w).sum(-1), self.sigma), obs=y)


def exact_loo(X, y, tau, sigma):
    """log p(y_i | y_-i) of the conjugate model, in closed form for each i."""
    X, y = X.double(), y.double()
    out = []
    for i in range(len(y)):
        keep = torch.arange(len(y)) != i
        V = torch.linalg.inv(X[keep].T @ X[keep] / sigma**2 + torch.eye(X.shape[1], dtype=X.dtype) / tau**2)
        m = V @ X[keep].T @ y[keep] / sigma**2
        out.append(dist.Normal(X[i] @ m, (sigma**2 + X[i] @ V @ X[i]).sqrt()).log_prob(y[i]))
    return torch.stack(out).numpy()


@pytest.fixture(scope="module")
def regression():
    g = torch.Generator().manual_seed(1)
    n = 40
    X = torch.randn(n, 3, generator=g)
    y = X @ torch.tensor([1.0, -0.5, 0.3]) + 0.5 * torch.randn(n, generator=g)
    y[0] += 2.0  # an influential point
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    model = BayesianLinearRegression()
    guide = AutoNormal(model)
    history = fit(model, guide, (X, y), epochs=1000, batch_size=n, lr=0.03, lr_schedule="cosine", progress=False)
    pyro.set_rng_seed(0)
    return model, guide, X, y, D.to_inference_data(model, guide, (X, y), 2000, history=history)


def test_global_latent_inference_data(regression):
    model, guide, X, y, idata = regression
    assert idata.posterior["w"].dims == ("chain", "draw", "w_dim_0") and idata.posterior["w"].shape == (1, 2000, 3)
    assert idata.log_likelihood["y"].dims == ("chain", "draw", "datapoint")
    assert idata.posterior_predictive["y"].dims == ("chain", "draw", "datapoint")
    assert idata.constant_data["X"].dims == ("datapoint", "X_dim_1")
    assert idata.sample_stats["lp"].dims == ("chain", "draw")
    assert idata.training.sizes["epoch"] == 1000
    w = torch.as_tensor(idata.posterior["w"].values[0])
    expected = dist.Normal(w @ X.T, model.sigma).log_prob(y)
    np.testing.assert_allclose(idata.log_likelihood["y"].values[0], expected.numpy(), rtol=1e-5, atol=1e-5)


def test_guide_corrected_loo_matches_exact_loo(regression):
    model, guide, X, y, idata = regression
    exact = exact_loo(X, y, model.tau, model.sigma)
    loo = D.guide_corrected_loo(idata)
    assert loo["guide_k"] < D.KHAT_BAD and (loo["pareto_k"].values < D.KHAT_BAD).all()
    assert abs(loo["elpd_loo"] - exact.sum()) < 0.25
    np.testing.assert_allclose(loo["loo_i"].values, exact, atol=0.1)
    assert loo["n_samples"] == 2000 and loo["n_data_points"] == 40 and loo["p_loo"] > 0


class FixedNormalGuide(nn.Module):
    """q(w) = N(loc, diag scale^2), site "w": a guide with given, untrained parameters."""

    def __init__(self, loc, scale):
        super().__init__()
        self.loc, self.scale = loc, scale

    def forward(self, X, y):
        pyro.sample("w", dist.Normal(self.loc, self.scale).to_event(1))


def test_guide_correction_repairs_a_poor_guide(regression):
    """With the trained guide's scales doubled, treating its draws as posterior draws is far
    off; the importance correction recovers the exact LOO (the weights are bounded)."""
    model, guide, X, y, _ = regression
    exact = exact_loo(X, y, model.tau, model.sigma).sum()
    wide = FixedNormalGuide(guide.locs.w.detach().clone(), 2.0 * guide.scales.w.detach().clone())
    pyro.set_rng_seed(1)
    idata = D.to_inference_data(model, wide, (X, y), 4000)
    loo = D.guide_corrected_loo(idata)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # ArviZ rightly warns about its own (naive) k-hats
        naive = az.loo(idata)["elpd_loo"]
    assert loo["guide_k"] < D.KHAT_GOOD
    assert abs(naive - exact) > 5.0
    assert abs(loo["elpd_loo"] - exact) < 0.5


def test_guide_corrected_loo_refuses_local_latents(vae_idata):
    with pytest.raises(ValueError, match="global"):
        D.guide_corrected_loo(vae_idata[3])


class MatmulRegression(BayesianLinearRegression):
    """The same model written with ``X @ w``, which does not broadcast over a draw dim."""

    def forward(self, X, y):
        w = pyro.sample("w", dist.Normal(torch.zeros(X.shape[1]), self.tau).to_event(1))
        with pyro.plate("data", X.shape[0]):
            pyro.sample("y", dist.Normal(X @ w, self.sigma), obs=y)


@pytest.mark.parametrize("vectorize", [True, False])
def test_unvectorizable_model_is_drawn_one_draw_at_a_time(regression, vectorize):
    """No flag needed: the draws fall back to a loop by themselves (vectorize=False still works)."""
    _, guide, X, y, _ = regression
    model = MatmulRegression()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "does not broadcast ... in a loop": tests/test_broadcasting.py
        idata = D.to_inference_data(model, guide, (X, y), 5, vectorize=vectorize)
    assert idata.posterior["w"].shape == (1, 5, 3) and idata.log_likelihood["y"].shape == (1, 5, 40)
    w = torch.as_tensor(idata.posterior["w"].values[0])
    expected = dist.Normal(w @ X.T, model.sigma).log_prob(y)
    np.testing.assert_allclose(idata.log_likelihood["y"].values[0], expected.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", ["vae_idata", "vrnn_case", "regression"])
def test_netcdf_round_trip_is_lossless(case, request, tmp_path):
    idata = request.getfixturevalue(case)[-1]
    path = tmp_path / "posterior.nc"
    idata.to_netcdf(str(path))
    loaded = az.from_netcdf(str(path))
    assert set(loaded.groups()) == set(idata.groups())
    for group in idata.groups():
        assert loaded[group].identical(idata[group]), group


# -- latent-space health -------------------------------------------------------------------------

def test_kl_per_dimension_matches_the_closed_form(digits):
    torch.manual_seed(0)
    model = VAE.for_data(digits, 4, hidden=32)
    guide = DiagonalNormalGuide.for_model(model, hidden=32)
    x = digits.test[:40]
    kl = D.latent_kl(model, guide, x, num_samples=400)
    with torch.no_grad():
        exact = torch.distributions.kl_divergence(guide.posterior(x).base_dist, model.prior().base_dist)
    np.testing.assert_allclose(kl["z_per_dim"].mean("datapoint").values, exact.mean(0).numpy(), atol=0.05)
    np.testing.assert_allclose(kl["z"].values, kl["z_per_dim"].sum("latent").values, rtol=1e-4, atol=1e-4)


def test_active_units_from_draws_agree_with_exact_posterior_means(vae_idata, digits):
    model, guide, x, _ = vae_idata
    torch.manual_seed(1)
    idata = D.to_inference_data(model, guide, x, 200)
    with torch.no_grad():
        exact = guide.posterior(x).mean.var(0, unbiased=True).numpy()
    activity = D.latent_activity(idata).values
    np.testing.assert_allclose(activity, exact, rtol=0.2, atol=0.003)
    assert D.active_units(idata, threshold=0.0) == 4 and D.active_units(idata, threshold=1e6) == 0


def test_ppc_statistics_suit_the_data(vae_idata, vrnn_case, regression):
    vae = D.ppc_statistics(vae_idata[-1])
    assert set(vae.observed_data.data_vars) == {"mean_per_datapoint", "sd_per_datapoint", "mean_per_feature"}
    np.testing.assert_allclose(vae.observed_data["mean_per_datapoint"].values, vae_idata[2].mean(1).numpy(), rtol=1e-6)
    seq = D.ppc_statistics(vrnn_case[-1])
    x, mask = vrnn_case[2], vrnn_case[3]
    notes = (x.sum(-1) * mask).sum(-1) / mask.sum(-1)
    np.testing.assert_allclose(seq.observed_data["notes_per_frame"].values, notes.numpy(), rtol=1e-6)
    both = (mask[:, 1:] & mask[:, :-1]).float()
    changes = ((x[:, 1:] - x[:, :-1]).abs().sum(-1) * both).sum(-1) / both.sum(-1)
    np.testing.assert_allclose(seq.observed_data["note_changes_per_frame"].values, changes.numpy(), rtol=1e-6)
    assert seq.posterior_predictive["notes_per_frame"].dims == ("chain", "draw", "datapoint")
    assert list(D.ppc_statistics(regression[-1]).observed_data.data_vars) == ["y"]
