"""Held-out evaluation in nats: bounds (ELBO, importance-sampled log p(x)), the latent
metrics (:mod:`.latents`), and the per-frame numbers of sequence models (:mod:`.sequences`)."""
from .bounds import evaluate, heldout_log_weights, iwae_log_likelihood, test_elbo
from .latents import (active_units, code_sparsity, guide_activity, has_sparse_prior, latent_activity, posterior_mean,
                      sample_latents)

__all__ = ["evaluate", "test_elbo", "iwae_log_likelihood", "heldout_log_weights", "posterior_mean", "sample_latents", "latent_activity",
           "active_units", "code_sparsity", "guide_activity", "has_sparse_prior"]
