"""Held-out evaluation in nats: the ELBO, the importance-sampled log-likelihood, and the
health of the latent code (active units, sparsity).

Sign convention: an ELBO or log-likelihood is a log-density (higher is better, negative for
discrete data); "-ELBO" / NLL in the literature are the same numbers with the sign flipped.
"""
from __future__ import annotations

import math

import pyro
import torch
from pyro import poutine

from ..nn import eval_mode
from ..infer.objectives import TraceELBO, log_importance_weights


def _batches(data, batch_size):
    data = tuple(data) if isinstance(data, (tuple, list)) else (data,)
    for i in range(0, data[0].shape[0], batch_size):
        yield tuple(t[i:i + batch_size] for t in data)


@torch.no_grad()
def test_elbo(model, guide, data, num_samples: int = 10, batch_size: int = 256) -> float:
    """ELBO per datapoint (nats), each datapoint's bound averaged over ``num_samples`` draws."""
    objective = TraceELBO(num_samples)
    total, n = 0.0, 0
    with eval_mode(model, guide):
        for batch in _batches(data, batch_size):
            total -= objective(model, guide, *batch).item()
            n += batch[0].shape[0]
    return total / n


@torch.no_grad()
def iwae_log_likelihood(model, guide, data, k: int = 1000, batch_size: int = 64, chunk: int = 100) -> torch.Tensor:
    """log p(x_n) estimated by importance sampling with ``k`` draws from q(z | x_n) (the IWAE
    bound, Burda et al. 2016): a lower bound in expectation that tightens as k grows.
    Returns one value per datapoint. Draws are taken ``chunk`` at a time to bound memory."""
    out = []
    with eval_mode(model, guide):
        for batch in _batches(data, batch_size):
            log_w = torch.cat([
                log_importance_weights(model, guide, *batch, num_particles=min(chunk, k - j))
                for j in range(0, k, chunk)
            ])
            out.append(torch.logsumexp(log_w, 0) - math.log(k))
    return torch.cat(out)


@torch.no_grad()
def posterior_mean(guide, x: torch.Tensor, site: str = "z", num_samples: int = 32) -> torch.Tensor:
    """E_q[z | x] per datapoint: exact when the guide's q has a mean, Monte Carlo otherwise."""
    if hasattr(guide, "posterior"):
        try:
            return guide.posterior(x).mean
        except NotImplementedError:
            pass
    return sample_latents(guide, x, site, num_samples).mean(0)


@torch.no_grad()
def sample_latents(guide, x: torch.Tensor, site: str = "z", num_samples: int = 1) -> torch.Tensor:
    """``num_samples`` draws of a latent site from the guide: ``[S, N, ...]``."""
    with pyro.plate("_particles", num_samples, dim=-2), pyro.validation_enabled(False), poutine.block():
        trace = poutine.trace(guide).get_trace(x)
    return trace.nodes[site]["value"]


@torch.no_grad()
def active_units(guide, x: torch.Tensor, threshold: float = 0.01) -> int:
    """Number of latent dimensions whose posterior mean varies across data: Cov_x(E_q[z|x])_dd
    > threshold (Burda et al., 2016). Collapsed dimensions copy the prior and score 0."""
    with eval_mode(guide):
        means = posterior_mean(guide, x)
    return int((means.var(0) > threshold).sum())


@torch.no_grad()
def code_sparsity(guide, x: torch.Tensor, threshold: float = 1e-2, num_samples: int = 8) -> float:
    """Share of sampled code entries with |z| <= threshold (exact zeros for spike-and-slab)."""
    with eval_mode(guide):
        z = sample_latents(guide, x, num_samples=num_samples)
    return float((z.abs() <= threshold).float().mean())


def evaluate(model, guide, data, *, k: int = 1000, elbo_samples: int = 10, sparsity: bool = False) -> dict:
    """The standard numbers for a trained VAE-family pair on held-out ``data`` (a tensor)."""
    log_px = iwae_log_likelihood(model, guide, data, k=k)
    metrics = {
        "test_elbo_nats": test_elbo(model, guide, data, num_samples=elbo_samples),
        "test_iwae_nats": float(log_px.mean()),
        "iwae_k": k,
        "active_units": active_units(guide, data),
    }
    if sparsity:
        metrics["code_sparsity"] = code_sparsity(guide, data)
    return metrics
