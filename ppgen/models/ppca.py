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

import pyro.distributions as dist
import torch


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
