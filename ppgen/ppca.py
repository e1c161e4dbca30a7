"""Probabilistic PCA in closed form (Tipping & Bishop, 1999).

The model::

    z_n ~ N(0, I_q)
    x_n | z_n ~ N(W z_n + mu, sigma2 I_D)

has the marginal x_n ~ N(mu, W W^T + sigma2 I) and the Gaussian posterior
p(z_n | x_n) = N(M^-1 W^T (x_n - mu), sigma2 M^-1) with M = W^T W + sigma2 I_q. These exact
answers are the ground truth that variational fits and their diagnostics are checked
against. A ``VAE(x_dim, q, decoder=nn.Linear(q, x_dim), likelihood="normal",
likelihood_kwargs={"scale": "isotropic"})`` is this model with W = decoder.weight,
mu = decoder.bias and sigma2 = the likelihood's variance.
"""
from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn


def ppca_log_likelihood(x: torch.Tensor, W: torch.Tensor, mu: torch.Tensor, sigma2) -> torch.Tensor:
    """Exact log p(x_n) = log N(x_n; mu, W W^T + sigma2 I) for each row of ``x`` [N, D]."""
    cov = W @ W.T + sigma2 * torch.eye(W.shape[0], dtype=W.dtype, device=W.device)
    return dist.MultivariateNormal(mu, covariance_matrix=cov).log_prob(x)


def ppca_posterior(x: torch.Tensor, W: torch.Tensor, mu: torch.Tensor, sigma2) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact posterior p(z_n | x_n) = N(mean_n, cov): ``mean`` [N, q] and the shared
    ``cov`` [q, q] (the posterior covariance does not depend on x in PPCA)."""
    q = W.shape[1]
    M = W.T @ W + sigma2 * torch.eye(q, dtype=W.dtype, device=W.device)
    mean = torch.linalg.solve(M, W.T @ (x - mu).T).T
    cov = sigma2 * torch.linalg.inv(M)
    return mean, 0.5 * (cov + cov.T)  # symmetrised against rounding


def ppca_mle(x: torch.Tensor, q: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The maximum-likelihood (W, mu, sigma2) for data ``x`` [N, D] and latent size ``q`` < D:
    mu is the sample mean, sigma2 the mean of the D - q smallest eigenvalues of the sample
    covariance S, and W = U_q (L_q - sigma2 I)^(1/2) from the q leading eigenpairs of S
    (the rotation is fixed to the identity)."""
    n, d = x.shape
    if not 0 < q < d:
        raise ValueError(f"PPCA needs 0 < q < D; got q={q} for D={d}")
    mu = x.mean(0)
    centred = x - mu
    eigvals, eigvecs = torch.linalg.eigh(centred.T @ centred / n)
    eigvals, eigvecs = eigvals.flip(0), eigvecs.flip(1)  # descending
    sigma2 = eigvals[q:].mean()
    W = eigvecs[:, :q] * (eigvals[:q] - sigma2).clamp_min(0).sqrt()
    return W, mu, sigma2


class ExactPPCAGuide(nn.Module):
    """q(z_n | x_n) = the exact PPCA posterior N(mean_n, scale^2 cov) read from a linear-
    decoder VAE's current parameters, site "z" in the plate "data". ``scale=1`` is the true
    posterior (the importance weights p(x, z) / q(z | x) are constant and equal p(x));
    ``scale < 1`` gives an over-confident guide with heavy-tailed weights (for a Gaussian
    the Pareto tail shape is k = 1 - scale^2), ``scale > 1`` an over-dispersed one with
    bounded weights.

    The guide has no parameters of its own; the model is kept outside the module tree so
    that an optimiser over ``model.parameters() + guide.parameters()`` sees each once."""

    latent_sites = ("z",)

    def __init__(self, model, scale: float = 1.0):
        super().__init__()
        self.check_model(model)
        object.__setattr__(self, "_model", model)
        self.scale = float(scale)

    @staticmethod
    def check_model(model) -> None:
        from .likelihoods import Normal
        from .priors import StandardNormal

        problems = []
        if not isinstance(getattr(model, "decoder", None), nn.Linear):
            problems.append("the decoder must be nn.Linear(z_dim, x_dim)")
        lik = getattr(model, "likelihood", None)
        if not (isinstance(lik, Normal) and lik.scale_kind == "isotropic"):
            problems.append('the likelihood must be "normal" with scale="isotropic"')
        if not isinstance(getattr(model, "prior", None), StandardNormal):
            problems.append("the prior must be the standard normal")
        if problems:
            raise ValueError("ExactPPCAGuide needs a PPCA-shaped VAE: " + "; ".join(problems))

    def ppca_parameters(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(W, mu, sigma2) of the model as it is now."""
        model = self._model
        sigma = model.likelihood(model.decoder.bias).base_dist.scale[0]  # the clamp the model applies
        return model.decoder.weight, model.decoder.bias, sigma**2

    def posterior(self, x: torch.Tensor):
        """q(z | x) with batch shape [N] and event shape [q]."""
        W, mu, sigma2 = self.ppca_parameters()
        mean, cov = ppca_posterior(x, W, mu, sigma2)
        return dist.MultivariateNormal(mean, scale_tril=self.scale * torch.linalg.cholesky(cov))

    def forward(self, x: torch.Tensor) -> None:
        q = self.posterior(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", q)
