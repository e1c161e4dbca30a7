"""The hierarchical VAE and its ladder guide.

Oracle: a two-layer linear-Gaussian hierarchy z2 ~ N(0, I), z1 | z2 ~ N(A z2 + b, diag s1^2),
x | z1 ~ N(W z1 + c, sigma^2 I) is a Gaussian model whose marginal p(x) = N(c + W b,
W (A A^T + diag s1^2) W^T + sigma^2 I) is known in closed form. With W = U diag(w) (U with
orthonormal columns) and A with orthogonal columns, its posterior factorises as the ladder guide
does (diagonal q(z2 | x), q(z1 | z2, x) the precision-weighted merge of a bottom-up estimate with
p(z1 | z2)), so a ladder guide with linear bottom-up maps can be exact.
"""
import json

import pytest
import torch
from torch import nn

from ppgen import likelihoods, priors
from ppgen.evaluate import evaluate, iwae_log_likelihood, latent_kl_nats
from ppgen.evaluate import test_elbo as elbo_of
from ppgen.guides import LadderGuide, check_sites
from ppgen.guides.amortized import DiagonalNormalGuide
from ppgen.infer import fit
from ppgen.models import VAE, HierarchicalVAE
from ppgen import report
from ppgen.runs import train_run

X_DIM, Z1, Z2 = 5, 3, 2


def inverse_softplus(y: torch.Tensor) -> torch.Tensor:
    return y + torch.log(-torch.expm1(-y))


class LinearGaussian:
    """The oracle's parameters, its exact p(x) and exact posterior maps."""

    def __init__(self, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.A = torch.zeros(Z1, Z2, dtype=torch.float64)
        self.A[0, 0], self.A[1, 1] = 1.5, -0.8  # orthogonal columns
        self.b = torch.randn(Z1, generator=g, dtype=torch.float64)
        self.s1 = torch.tensor([0.6, 0.9, 1.2], dtype=torch.float64)
        u, _ = torch.linalg.qr(torch.randn(X_DIM, Z1, generator=g, dtype=torch.float64))
        self.w = torch.tensor([2.0, 1.3, 0.7], dtype=torch.float64)
        self.W = u * self.w
        self.c = torch.randn(X_DIM, generator=g, dtype=torch.float64)
        self.sigma = 0.5

    def marginal(self):
        cov_z1 = self.A @ self.A.T + torch.diag(self.s1 ** 2)
        cov_x = self.W @ cov_z1 @ self.W.T + self.sigma ** 2 * torch.eye(X_DIM, dtype=torch.float64)
        return torch.distributions.MultivariateNormal(self.c + self.W @ self.b, cov_x)

    def sample(self, n: int, seed: int = 1) -> torch.Tensor:
        torch.manual_seed(seed)
        return self.marginal().sample((n,)).float()

    def model(self) -> HierarchicalVAE:
        top_down = nn.Linear(Z2, 2 * Z1)
        decoder = nn.Linear(Z1, X_DIM)
        lik = likelihoods.Normal(X_DIM, scale="isotropic", init_scale=self.sigma)
        with torch.no_grad():
            top_down.weight.zero_()
            top_down.weight[:Z1] = self.A.float()
            top_down.bias.copy_(torch.cat([self.b, inverse_softplus(self.s1 - 1e-4)]).float())
            decoder.weight.copy_(self.W.float())
            decoder.bias.copy_(self.c.float())
        return HierarchicalVAE(X_DIM, (Z1, Z2), likelihood=lik, decoder=decoder, top_down=[top_down])

    def exact_guide(self, model) -> LadderGuide:
        """Bottom-up heads that make the ladder guide the exact posterior."""
        # layer 1: the likelihood seen as a Gaussian in z1: precision W^T W / sigma^2, mean (W^T W)^-1 W^T (x - c)
        m1 = torch.linalg.solve(self.W.T @ self.W, self.W.T)
        s_hat1 = self.sigma / self.w
        # layer 2: p(z2 | x) by Gaussian conditioning of the joint (z2, x)
        cov_z2x = self.A.T @ self.W.T
        cov_x = self.marginal().covariance_matrix
        m2 = cov_z2x @ torch.linalg.inv(cov_x)
        post_cov = torch.eye(Z2, dtype=torch.float64) - m2 @ cov_z2x.T
        assert torch.allclose(post_cov, torch.diag(torch.diag(post_cov)), atol=1e-12)  # the oracle is built so
        heads = [nn.Linear(X_DIM, 2 * Z1), nn.Linear(X_DIM, 2 * Z2)]
        mean_x = self.marginal().mean
        with torch.no_grad():
            for head, m, offset, sd in ((heads[0], m1, m1 @ self.c, s_hat1),
                                        (heads[1], m2, m2 @ mean_x, torch.diag(post_cov).sqrt())):
                head.weight.zero_()
                head.weight[:m.shape[0]] = m.float()
                head.bias.copy_(torch.cat([-offset, inverse_softplus(sd - 1e-4)]).float())
        return LadderGuide(X_DIM, (Z1, Z2), model.conditional, bottom_up=[nn.Identity(), nn.Identity()], heads=heads)


@pytest.fixture(scope="module")
def oracle():
    return LinearGaussian()


def test_exact_guide_gives_elbo_equal_iwae_equal_exact(oracle):
    model = oracle.model()
    guide = oracle.exact_guide(model)
    x = oracle.sample(64)
    exact = oracle.marginal().log_prob(x.double())
    check_sites(model, guide, x)
    torch.manual_seed(0)
    iwae = iwae_log_likelihood(model, guide, x, k=50).double()
    elbo = elbo_of(model, guide, x, num_samples=20)
    assert torch.allclose(iwae, exact, atol=2e-3), (iwae - exact).abs().max()
    assert elbo == pytest.approx(float(exact.mean()), abs=2e-3)


def test_inexact_guide_bounds_are_ordered(oracle):
    model = oracle.model()
    guide = oracle.exact_guide(model)
    with torch.no_grad():
        for head in guide.heads:  # a guide away from the posterior: bounds strictly below log p(x)
            head.bias[: head.out_features // 2] += 0.3
            head.bias[head.out_features // 2:] -= 0.3
    x = oracle.sample(400, seed=2)
    exact = float(oracle.marginal().log_prob(x.double()).mean())
    torch.manual_seed(0)
    log_px = iwae_log_likelihood(model, guide, x, k=1000).double()
    elbo = elbo_of(model, guide, x, num_samples=50)
    assert elbo < float(log_px.mean()) - 0.1
    assert float(log_px.mean()) <= exact + 0.02  # the IWAE estimate is biased down; its Monte Carlo noise is ~1e-3 here
    assert exact - float(log_px.mean()) < 0.5 * (exact - elbo)  # K = 1000 closes most of the ELBO's gap


def test_ladder_guide_learns_the_exact_posterior(oracle):
    """Model fixed at the oracle, guide trained from scratch with linear bottom-up maps: its
    ELBO closes on the exact log p(x) (the guide family contains the posterior)."""
    model = oracle.model()
    for p in model.parameters():
        p.requires_grad_(False)
    torch.manual_seed(0)
    guide = LadderGuide(X_DIM, (Z1, Z2), model.conditional, bottom_up=[nn.Identity(), nn.Identity()],
                        heads=[nn.Linear(X_DIM, 2 * Z1), nn.Linear(X_DIM, 2 * Z2)])
    x = oracle.sample(512, seed=3)
    exact = float(oracle.marginal().log_prob(x.double()).mean())
    before = elbo_of(model, guide, x, num_samples=50)
    fit(model, guide, x, epochs=800, batch_size=512, lr=3e-2, device="cpu", progress=False, seed=0)
    elbo = elbo_of(model, guide, x, num_samples=50)
    assert exact - before > 2.0
    assert exact - 0.1 < elbo <= exact + 0.02  # measured: 0.067 below after these 800 steps


def test_per_layer_kl_matches_the_closed_form(oracle):
    model = oracle.model()
    guide = oracle.exact_guide(model)
    x = oracle.sample(200, seed=4)
    torch.manual_seed(0)
    kl = latent_kl_nats(model, guide, x, {"z1": ["z1"], "z2": ["z2"]}, num_samples=400)
    # the exact posterior: KL(q(z2|x) || p(z2)) in closed form from the guide's Gaussian
    with torch.no_grad():
        q2 = guide.posterior(x)
    closed = float(torch.distributions.kl_divergence(
        torch.distributions.Normal(q2.base_dist.loc, q2.base_dist.scale), torch.distributions.Normal(0.0, 1.0)
    ).sum(-1).mean())
    assert kl["z2"] == pytest.approx(closed, abs=0.03)
    assert kl["z1"] > 0.1
    metrics = evaluate(model, guide, x, k=100)
    assert {"kl_nats_z1", "kl_nats_z2", "active_units_z1", "active_units_z2"} <= set(metrics)
    assert metrics["active_units_z2"] == Z2 and metrics["active_units_z1"] == Z1


def test_top_prior_swaps_and_sampling_walks_down(digits):
    model = HierarchicalVAE.for_data(digits, (8, 4), hidden=32)
    assert model.prior.z_dim == 4 and model.sites == ["z1", "z2"]
    model.prior = priors.MixtureOfGaussians(model.z_dim)
    guide = LadderGuide.for_model(model, hidden=32)
    check_sites(model, guide, digits.train[:3])
    assert model.sample(5).shape == (5, digits.x_dim)
    vamp = priors.VampPrior(model.z_dim, components=7)
    model.prior = vamp
    vamp.use_guide(guide, digits.train)  # the top layer's q(z_L | x) encodes the pseudo-inputs
    assert vamp().batch_shape == () and vamp().event_shape == (4,)
    hist = fit(model, guide, digits.train[:256], epochs=10, batch_size=64, lr=3e-3, device="cpu", progress=False, seed=0)
    assert hist.step_loss[-1] < hist.step_loss[0] - 10


def test_clear_errors(digits):
    with pytest.raises(ValueError, match="at least two layers"):
        HierarchicalVAE(digits.x_dim, (8,))
    with pytest.raises(ValueError, match="ladder guide needs a hierarchical model"):
        LadderGuide.for_model(VAE.for_data(digits))
    model = HierarchicalVAE.for_data(digits, (8, 4), hidden=32)
    with pytest.raises(ValueError, match="z1"):  # a one-layer guide does not match the sites
        check_sites(model, DiagonalNormalGuide(digits.x_dim, 4, hidden=32), digits.train[:3])
    with pytest.raises(ValueError, match="shape"):
        model.check_data(digits.train[:3, :10])


def test_run_reports_kl_and_active_units_per_layer(tmp_path):
    out = tmp_path / "run"
    metrics = train_run({"model": "hvae", "data": "digits", "epochs": 2, "z_dims": [6, 3], "hidden": 32, "seed": 0},
                        out, device="cpu", progress=False, iwae_k=20)
    for key in ("kl_nats_z1", "kl_nats_z2", "active_units_z1", "active_units_z2"):
        assert key in metrics
    assert metrics["kl_nats_z1"] >= 0 and metrics["kl_nats_z2"] >= 0
    assert json.loads((out / "config.json").read_text())["z_dims"] == [6, 3]
    assert (out / "samples.png").exists()
    report(out, num_samples=10, importance_samples=20, max_obs=30)
    html = (out / "report.html").read_text()
    for row in ("KL(q || p) of z1 per datapoint", "KL(q || p) of z2 per datapoint", "active units of z1",
                "active units of z2", "Latent traversals"):
        assert row in html, row  # traversals are drawn only where the report knows the decoder's code: z1
