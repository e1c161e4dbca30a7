"""Pairs whose code does not broadcast over a leading draw dimension (the Bayesian-regression
tutorial's ``PyroModule[nn.Linear]`` with ``PyroSample`` weights) go through fit -> evaluate ->
importance_diagnostics -> to_inference_data -> report, drawn one draw at a time with one
warning, and give the numbers of an exact computation; the looped draws of a pair that does
broadcast look and weigh like its vectorized draws. And data of any real dtype go in."""
import math
import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer.autoguide import AutoDiagonalNormal
from pyro.nn import PyroModule, PyroParam, PyroSample
from torch import nn
from torch.distributions import constraints

import ppgen
import ppgen.diagnostics as D
from ppgen.distributions.stacked import Stacked
from ppgen.evaluate.bounds import draw_bytes, heldout_log_weights, joint_log_weights
from ppgen.guides.sites import SiteMismatchError
from ppgen.infer import draws
from ppgen.infer.importance import importance_sample
from ppgen.infer.objectives import TraceELBO

NOT_BROADCASTING = "does not broadcast over a leading draw dimension"


class BayesianRegression(PyroModule):
    """The Pyro tutorial's regression: y_n ~ N(w x_n + b, sigma), w ~ N(0, 1), b ~ N(0, 10),
    sigma ~ U(0, 10); ``nn.Linear`` takes a 2-D weight only, so it cannot see a draw dim."""

    def __init__(self, in_features, out_features=1):
        super().__init__()
        self.linear = PyroModule[nn.Linear](in_features, out_features)
        self.linear.weight = PyroSample(dist.Normal(0., 1.).expand([out_features, in_features]).to_event(2))
        self.linear.bias = PyroSample(dist.Normal(0., 10.).expand([out_features]).to_event(1))

    def forward(self, x, y=None):
        sigma = pyro.sample("sigma", dist.Uniform(0., 10.))
        mean = self.linear(x).squeeze(-1)
        with pyro.plate("data", x.shape[0]):
            return pyro.sample("obs", dist.Normal(mean, sigma), obs=y)


def regression_data(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 1.0 + 0.5 * torch.randn(n, generator=g)
    return x, y


def orthogonal_design(n, seed):
    """Centred, orthogonal columns of norm sqrt(n): given sigma the exact posterior of
    (w, b) is then a product of independent Gaussians, which a mean-field guide can match."""
    x, y = regression_data(n, seed)
    q, _ = torch.linalg.qr(x - x.mean(0))
    x = q * math.sqrt(n)
    return x, x @ torch.tensor([1.0, -2.0, 0.5]) + 1.0 + 0.5 * torch.randn(n, generator=torch.Generator().manual_seed(seed))


class Exact:
    """The exact posterior of the tutorial's regression on (x, y): (w, b) given sigma is
    conjugate Gaussian, and sigma (uniform on [0, 10]) is integrated out on a grid."""

    def __init__(self, x, y, grid=torch.linspace(0.02, 10.0, 4000, dtype=torch.float64)):
        a = torch.cat([x.double(), torch.ones(len(x), 1, dtype=torch.float64)], 1)
        y = y.double()
        prior = torch.tensor([1.0, 1.0, 1.0, 100.0], dtype=torch.float64)
        prec = torch.diag(1 / prior) + a.T @ a / grid[:, None, None] ** 2
        self.cov = torch.linalg.inv(prec)  # [G, 4, 4]
        self.mu = (self.cov @ (a.T @ y))/ grid[:, None] ** 2
        marginal = a @ torch.diag(prior) @ a.T + grid[:, None, None] ** 2 * torch.eye(len(y), dtype=torch.float64)
        log_ml = dist.MultivariateNormal(torch.zeros(len(y), dtype=torch.float64), marginal).log_prob(y)
        log_joint = log_ml - math.log(10.0)  # the uniform prior's density
        self.log_evidence = float(torch.logsumexp(log_joint, 0) + math.log(grid[1] - grid[0]))
        self.weights, self.grid = torch.softmax(log_joint, 0), grid

    def moments(self):
        """Posterior means and sds of (w_1, w_2, w_3, b)."""
        mean = (self.weights[:, None] * self.mu).sum(0)
        second = (self.weights[:, None] * (torch.diagonal(self.cov, dim1=1, dim2=2) + self.mu ** 2)).sum(0)
        return mean, (second - mean ** 2).sqrt()

    def predictive(self, x, y):
        """log p(y_n | data) for new (x_n, y_n): ``[N]``."""
        a = torch.cat([x.double(), torch.ones(len(x), 1, dtype=torch.float64)], 1)
        loc = self.mu @ a.T  # [G, N]
        var = self.grid[:, None] ** 2 + torch.einsum("nd,gde,ne->gn", a, self.cov, a)
        log_p = dist.Normal(loc, var.sqrt()).log_prob(y.double())
        return torch.logsumexp(log_p + self.weights.log()[:, None], 0)


@pytest.fixture(scope="module")
def tutorial():
    """The tutorial's pair fit on 60 points (centred, orthogonal design), 40 held out."""
    pyro.clear_param_store()
    torch.manual_seed(0)
    train = orthogonal_design(60, 0)
    test = regression_data(40, 1)
    model = BayesianRegression(3)
    guide = AutoDiagonalNormal(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ppgen.fit(model, guide, train, epochs=2000, batch_size=60, lr=0.05, lr_schedule="cosine", progress=False)
    assert not [w for w in caught if NOT_BROADCASTING in str(w.message)]  # training draws one particle, no plate
    return model, guide, train, test, Exact(*train)


def test_the_tutorial_regression_goes_through_every_entry_point_with_one_warning(tutorial, tmp_path):
    model, guide, train, test, exact = tutorial
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.manual_seed(1)
        metrics = ppgen.evaluate(model, guide, test, fit_data=train, k=1000)
        diag = D.importance_diagnostics(model, guide, test, 1000, fit_data=train)
        idata = D.to_inference_data(model, guide, train, 2000)
        report = ppgen.report(model, guide, test, out=tmp_path / "r.html", fit_data=train)
    said = [str(w.message) for w in caught if NOT_BROADCASTING in str(w.message)]
    assert len(said) == 1 and "BayesianRegression" in said[0] and "in a loop" in said[0]

    # evaluate: the training data's log p(y) and the held-out predictive densities, exactly
    assert metrics["global_latents"] == ["sigma", "linear.weight", "linear.bias"]
    assert metrics["fit_iwae_nats"] == pytest.approx(exact.log_evidence / 60, abs=0.01)
    assert metrics["fit_elbo_nats"] <= metrics["fit_iwae_nats"] + 1e-3
    predictive = exact.predictive(*test)
    assert metrics["test_iwae_nats"] == pytest.approx(float(predictive.mean()), abs=0.03)

    # importance_diagnostics: per-datapoint log p(y_n | data), a good guide's k-hats
    np.testing.assert_allclose(diag["log_px"].values, predictive.numpy(), atol=0.05)
    assert (diag["khat"].values < D.KHAT_GOOD).all()
    assert diag.attrs["global_khat"] < D.KHAT_BAD

    # to_inference_data: the guide's means and sds of w and b against the exact posterior
    mean, sd = exact.moments()
    post = idata.posterior
    w, b = post["linear.weight"].values.reshape(-1, 3), post["linear.bias"].values.reshape(-1, 1)
    drawn = np.concatenate([w, b], 1)
    np.testing.assert_allclose(drawn.mean(0), mean.numpy(), rtol=0.1)
    np.testing.assert_allclose(drawn.std(0), sd.numpy(), rtol=0.1)
    assert idata.log_likelihood["obs"].shape == (1, 2000, 60)
    ll = torch.as_tensor(idata.log_likelihood["obs"].values[0, :5])
    sigma = torch.as_tensor(post["sigma"].values[0, :5])
    expected = dist.Normal(torch.as_tensor(w[:5]) @ train[0].T + torch.as_tensor(b[:5]), sigma[:, None]).log_prob(train[1])
    torch.testing.assert_close(ll, expected, rtol=1e-4, atol=1e-4)

    assert report.path.exists() and report.posterior_path.exists()
    assert "linear.weight" in report.html and "sigma" in report.html


def test_draw_sizing_and_plate_helpers_survive_a_model_that_does_not_broadcast(tutorial):
    model, guide, train, test, _ = tutorial
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert draw_bytes(model, guide, test, local=True) > 0
        assert joint_log_weights(model, guide, train, 30).shape == (30,)
        assert heldout_log_weights(model, guide, test, 7, local=True).shape == (7, 40)


# -- the looped draws of a pair that broadcasts look and weigh like its vectorized draws ---------

class ScaledFactors(PyroModule):
    """x_n ~ N(W z_n, s), z_n ~ N(0, I) local, s ~ LogNormal(0, 1) global: broadcasts."""

    def __init__(self):
        super().__init__()
        self.W = torch.tensor([[1.0, 0.0], [0.5, 1.0], [-1.0, 0.5], [0.0, 2.0]])

    def forward(self, x):
        s = pyro.sample("s", dist.LogNormal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.W.T, s.unsqueeze(-1)).to_event(1), obs=x)


class ScaledFactorsGuide(PyroModule):
    def __init__(self):
        super().__init__()
        self.A = torch.linalg.pinv(ScaledFactors().W.T)  # a fixed amortized mean: z ~ N(A x, 0.4)
        self.loc = PyroParam(torch.tensor(-0.5))
        self.scale = PyroParam(torch.tensor(0.3), constraint=constraints.positive)

    def forward(self, x):
        pyro.sample("s", dist.LogNormal(self.loc, self.scale))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x @ self.A * 0.8, 0.4).to_event(1))


@pytest.fixture(scope="module")
def factors():
    g = torch.Generator().manual_seed(3)
    z = torch.randn(30, 2, generator=g)
    x = z @ ScaledFactors().W.T + 0.6 * torch.randn(30, 4, generator=g)
    return ScaledFactors(), ScaledFactorsGuide(), x


def test_looped_sites_have_the_shapes_of_vectorized_sites(factors):
    model, guide, x = factors
    vectorized = importance_sample(model, guide, x, num_particles=5)
    with draws.looped():
        looped = importance_sample(model, guide, x, num_particles=5)
    for which in ("model_sites", "guide_sites"):
        v_sites, l_sites = getattr(vectorized, which), getattr(looped, which)
        assert list(v_sites) == list(l_sites)
        for name, v in v_sites.items():
            lp = l_sites[name]
            assert isinstance(lp["fn"], Stacked) and not isinstance(v["fn"], Stacked)
            assert lp["value"].shape == v["value"].shape, name
            assert lp["fn"].batch_shape == v["fn"].batch_shape and lp["fn"].event_shape == v["fn"].event_shape, name
            assert lp["fn"].sample().shape == v["fn"].sample().shape, name
            assert lp["fn"].mean.shape == v["fn"].mean.shape, name
            assert looped.log_prob(lp).shape == vectorized.log_prob(v).shape, name
            assert [(f.name, f.dim, f.size) for f in lp["cond_indep_stack"]] == \
                [(f.name, f.dim, f.size) for f in v["cond_indep_stack"]], name
            assert lp["is_observed"] == v["is_observed"]
    assert looped.local_log_weights().shape == vectorized.local_log_weights().shape == (5, 30)
    assert looped.log_density(looped.model_sites).shape == (5,)


def test_a_forced_loop_gives_the_vectorized_numbers(factors):
    """The same IWAE, k-hat, joint log p and KL within Monte Carlo error, on a pair that broadcasts."""
    model, guide, x = factors
    torch.manual_seed(0)
    vec = D.importance_diagnostics(model, guide, x, 400)
    vec_kl = D.latent_kl(model, guide, x, 200)
    vec_idata = D.to_inference_data(model, guide, x, 50)
    with draws.looped():
        loop = D.importance_diagnostics(model, guide, x, 400, fit_data=x)  # the joint k-hat's path too
        loop_kl = D.latent_kl(model, guide, x, 200)
        loop_idata = D.to_inference_data(model, guide, x, 50)
    se = np.sqrt(vec["log_px_se"].values ** 2 + loop["log_px_se"].values ** 2)
    assert np.all(np.abs(vec["log_px"].values - loop["log_px"].values) < 4 * se + 1e-3)
    assert abs(float(vec["log_px"].mean() - loop["log_px"].mean())) < 0.02
    assert np.isfinite(loop.attrs["global_khat"])
    joint_vec, joint_loop = joint_log_weights(model, guide, x, 300).double(), None
    with draws.looped():
        joint_loop = joint_log_weights(model, guide, x, 300).double()
    se = math.sqrt((joint_vec.var() + joint_loop.var()) / 300)
    assert abs(float(joint_vec.mean() - joint_loop.mean())) < 4 * se  # the full-data ELBO
    assert float(vec_kl["z"].mean()) == pytest.approx(float(loop_kl["z"].mean()), rel=0.05)
    for group in ("posterior", "log_likelihood", "posterior_predictive", "sample_stats"):
        for name, var in vec_idata[group].data_vars.items():
            assert loop_idata[group][name].dims == var.dims and loop_idata[group][name].shape == var.shape


class LocalFactors(ScaledFactors):
    """The same model with s fixed: every latent local, so each datapoint's k-hat stands alone."""

    def forward(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.W.T, 0.6).to_event(1), obs=x)


class LocalFactorsGuide(ScaledFactorsGuide):
    """By default narrower than the posterior: k-hats near 0.5, where they are informative."""

    def __init__(self, scale=0.25):
        super().__init__()
        self.z_scale = scale

    def forward(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x @ self.A * 0.8, self.z_scale).to_event(1))


def test_a_forced_loop_gives_the_vectorized_iwae_and_khat(factors):
    _, _, x = factors
    model, guide = LocalFactors(), LocalFactorsGuide()
    torch.manual_seed(0)
    vec = D.importance_diagnostics(model, guide, x, 1000)
    vec_metrics = ppgen.evaluate(model, guide, x, k=1000)
    with draws.looped():
        loop = D.importance_diagnostics(model, guide, x, 1000)
        loop_metrics = ppgen.evaluate(model, guide, x, k=1000)
    assert abs(vec_metrics["test_iwae_nats"] - loop_metrics["test_iwae_nats"]) < 0.01
    assert abs(vec_metrics["test_elbo_nats"] - loop_metrics["test_elbo_nats"]) < 0.1
    assert abs(vec_metrics["kl_nats"] - loop_metrics["kl_nats"]) < 0.1
    assert 0.3 < float(vec["khat"].mean()) < 0.7
    # one k-hat from 1000 draws is noisy (+-0.15); their mean over 30 datapoints varies by ~0.015
    assert abs(float(vec["khat"].mean() - loop["khat"].mean())) < 0.06


class MatmulFactors(LocalFactors):
    """LocalFactors written with ``torch.mm``, which takes 2-D codes only: local latents that do
    not broadcast."""

    def forward(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(torch.mm(z, self.W.T), 0.6).to_event(1), obs=x)


def test_a_local_model_that_does_not_broadcast_gets_the_numbers_of_one_that_does(factors, tmp_path):
    _, _, x = factors
    guide = LocalFactorsGuide(0.4)  # wider than the posterior: light-tailed weights, a precise IWAE
    torch.manual_seed(0)
    expected = ppgen.evaluate(LocalFactors(), guide, x, k=1000, elbo_samples=100)
    with pytest.warns(UserWarning, match="model MatmulFactors .* does not broadcast"):
        got = ppgen.evaluate(MatmulFactors(), guide, x, k=1000, elbo_samples=100)
    assert got["test_iwae_nats"] == pytest.approx(expected["test_iwae_nats"], abs=0.01)
    assert got["test_elbo_nats"] == pytest.approx(expected["test_elbo_nats"], abs=0.05)
    assert got["kl_nats"] == pytest.approx(expected["kl_nats"], abs=0.05)
    assert got["active_units"] == expected["active_units"]


def test_a_pair_that_broadcasts_never_takes_the_loop(factors):
    model, guide, x = factors
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "does not broadcast" warning
        sample = importance_sample(model, guide, x, num_particles=7)
        D.importance_diagnostics(model, guide, x, 20)
    assert not any(isinstance(msg["fn"], Stacked) for msg in (*sample.model_sites.values(), *sample.guide_sites.values()))
    assert not draws._NOT_BROADCASTING.holds((model, guide))


def test_the_decision_is_remembered_and_the_vectorized_run_not_retried():
    x, y = regression_data(20, 0)
    model = BayesianRegression(3)
    guide = AutoDiagonalNormal(model)
    guide(x, y)  # an autoguide traces the model once on its first call
    calls = []
    forward = model.forward

    def counted(*args):
        calls.append(args[0].dim())
        return forward(*args)

    model.forward = counted
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        importance_sample(model, guide, x, y, num_particles=3)
        first = len(calls)
        importance_sample(model, guide, x, y, num_particles=3)
    assert first == 1 + 3  # the vectorized attempt, then three plate-free runs
    assert len(calls) - first == 3  # no second attempt
    assert len([w for w in caught if NOT_BROADCASTING in str(w.message)]) == 1


def test_a_program_that_fails_without_draws_too_keeps_its_own_error():
    def model(x):
        raise KeyError("broken")

    def guide(x):
        pass

    with pytest.raises(KeyError, match="broken"):
        importance_sample(model, guide, torch.zeros(3, 2), num_particles=4)
    assert not draws._NOT_BROADCASTING.holds((model, guide))


# -- data types --------------------------------------------------------------------------------

class TinyVAE(PyroModule):
    """A user's VAE on binary data: nn.Linear encoder and decoder, Bernoulli pixels."""

    def __init__(self, d=6, z=2):
        super().__init__()
        self.decoder = nn.Linear(z, d)
        self.z = z

    def forward(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("code", dist.Normal(torch.zeros(self.z), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)


class TinyEncoder(nn.Module):
    def __init__(self, d=6, z=2):
        super().__init__()
        self.net = nn.Linear(d, 2 * z)

    def forward(self, x):
        pyro.module("encoder", self)
        loc, log_scale = self.net(x).chunk(2, -1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("code", dist.Normal(loc, log_scale.exp()).to_event(1))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.bool, torch.float16, torch.int64, "numpy uint8"])
def test_data_of_any_real_dtype_goes_through_fit_and_evaluate(dtype):
    pyro.clear_param_store()
    torch.manual_seed(0)
    binary = torch.rand(40, 6) < 0.4
    data = binary.numpy().astype(np.uint8) if dtype == "numpy uint8" else binary.to(dtype)
    model, guide = TinyVAE(), TinyEncoder()
    history = ppgen.fit(model, guide, data, data, epochs=2, batch_size=20, progress=False)
    assert math.isfinite(history.train_elbo[-1])
    metrics = ppgen.evaluate(model, guide, data, k=10, elbo_samples=2)
    assert math.isfinite(metrics["test_iwae_nats"]) and math.isfinite(metrics["test_elbo_nats"])
    assert D.importance_diagnostics(model, guide, data, 10)["log_px"].shape == (40,)
    assert D.to_inference_data(model, guide, data, 4).observed_data["x"].dtype == np.float32


def test_the_regression_takes_integer_covariates_as_its_data():
    pyro.clear_param_store()
    x, y = regression_data(30, 0)
    counts = x.round().clamp(0, 9).to(torch.uint8)
    model = BayesianRegression(3)
    guide = AutoDiagonalNormal(model)
    ppgen.fit(model, guide, (counts, y), epochs=3, batch_size=30, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert math.isfinite(ppgen.evaluate(model, guide, (counts, y), fit_data=(counts, y), k=20)["fit_iwae_nats"])


def test_a_dtype_problem_is_named_as_one_not_as_a_site_mismatch():
    """The data (first argument) are converted; another argument the model cannot compute
    with is named with its dtype in a TypeError, not a SiteMismatchError."""

    class Covariates(PyroModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Linear(3, 1)

        def forward(self, y, c):
            with pyro.plate("data", y.shape[0]):
                pyro.sample("y", dist.Normal(self.net(c).squeeze(-1), 1.0), obs=y)

    pyro.clear_param_store()
    x, y = regression_data(10, 0)
    model = Covariates()
    with pytest.raises(TypeError, match="c is uint8") as info:
        ppgen.fit(model, lambda y, c: None, (y, x.to(torch.uint8)), epochs=1, progress=False)
    assert not isinstance(info.value, SiteMismatchError) and "\n" not in str(info.value)
    with pytest.raises(TypeError, match="c is float64"):
        ppgen.fit(model, lambda y, c: None, (y, x.double()), epochs=1, progress=False)
    with pytest.raises(TypeError, match="complex"):
        ppgen.fit(model, lambda y, c: None, (torch.zeros(10, dtype=torch.complex64), x), epochs=1, progress=False)


def test_training_with_several_particles_loops_them_for_a_pair_that_does_not_broadcast():
    """fit(..., num_particles=4) of the tutorial's pair: the particles' plate fails on nn.Linear,
    so the objective draws them one at a time (one warning) and trains, the ELBO per datapoint
    rising from about -2.6 to about -1 nats."""
    pyro.clear_param_store()
    torch.manual_seed(0)
    x, y = regression_data(80, 5)
    model = BayesianRegression(3)
    guide = AutoDiagonalNormal(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = ppgen.fit(model, guide, (x, y), epochs=150, batch_size=80, lr=0.05, num_particles=4,
                            progress=False, device="cpu", seed=0)
    assert sum(NOT_BROADCASTING in str(w.message) for w in caught) == 1
    assert history.train_elbo[-1] > history.train_elbo[0] + 1.0 and all(map(math.isfinite, history.train_elbo))
    # the same objective with Pyro's validation on (interactive use) falls back the same way
    loss = TraceELBO(4)(model, guide, x, y)
    assert torch.isfinite(loss) and loss.requires_grad
    loss.backward()
