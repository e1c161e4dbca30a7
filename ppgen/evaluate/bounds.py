"""Held-out evaluation in nats: the ELBO and the importance-sampled log-likelihood, and
:func:`evaluate`, the standard numbers (with the latent metrics of :mod:`.latents`).

Sign convention: an ELBO or log-likelihood is a log-density (higher is better, negative for
discrete data); "-ELBO" / NLL in the literature are the same numbers with the sign flipped.
"""
from __future__ import annotations

import math

import torch

from ..infer.importance import log_importance_weights
from ..infer.objectives import TraceELBO
from ..nn import eval_mode
from .latents import active_units, code_sparsity, guide_activity, has_sparse_prior, sample_latents


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
def heldout_log_weights(model, guide, data, k: int = 1000, batch_size: int = 64, chunk: int = 100) -> torch.Tensor:
    """log w[k, n] = log p(x_n, z_kn) - log q(z_kn | x_n) for ``k`` draws z_kn ~ q(z | x_n) per
    datapoint of ``data`` (a tensor or a tuple of the model's arguments): ``[k, N]``, taken
    ``batch_size`` datapoints and ``chunk`` draws at a time to bound memory."""
    cols = []
    with eval_mode(model, guide):
        for batch in _batches(data, batch_size):
            cols.append(torch.cat([
                log_importance_weights(model, guide, *batch, num_particles=min(chunk, k - j))
                for j in range(0, k, chunk)
            ]))
    return torch.cat(cols, dim=1)


def iwae_log_likelihood(model, guide, data, k: int = 1000, batch_size: int = 64, chunk: int = 100) -> torch.Tensor:
    """log p(x_n) estimated by importance sampling with ``k`` draws from q(z | x_n) (the IWAE
    bound, Burda et al. 2016): a lower bound in expectation that tightens as k grows.
    Returns one value per datapoint."""
    log_w = heldout_log_weights(model, guide, data, k, batch_size, chunk)
    return torch.logsumexp(log_w, 0) - math.log(k)


def evaluate(model, guide, data, *, k: int = 1000, elbo_samples: int = 10, sparsity: bool | None = None) -> dict:
    """The standard numbers for a trained VAE-family pair on held-out ``data`` (a tensor):
    ``test_elbo_nats``, ``test_iwae_nats`` (log-densities per datapoint), ``iwae_k``,
    ``active_units`` of the latent "z", and ``code_sparsity`` when ``sparsity`` (by default:
    when the model's prior is sparse, ``model.prior.sparse``)."""
    if sparsity is None:
        sparsity = has_sparse_prior(model)
    log_px = iwae_log_likelihood(model, guide, data, k=k)
    metrics = {
        "test_elbo_nats": test_elbo(model, guide, data, num_samples=elbo_samples),
        "test_iwae_nats": float(log_px.mean()),
        "iwae_k": k,
        "active_units": active_units(guide_activity(guide, data)),
    }
    if sparsity:
        metrics["code_sparsity"] = code_sparsity(sample_latents(guide, data, num_samples=8))
    return metrics
