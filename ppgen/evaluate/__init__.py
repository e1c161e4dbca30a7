"""Held-out evaluation in nats: bounds (ELBO, importance-sampled log p(x)), latent metrics,
and the per-frame numbers of sequence models."""
from .bounds import active_units, code_sparsity, evaluate, iwae_log_likelihood, posterior_mean, sample_latents, test_elbo

__all__ = ["evaluate", "test_elbo", "iwae_log_likelihood", "posterior_mean", "sample_latents", "active_units",
           "code_sparsity"]
