"""Held-out evaluation in nats: bounds (ELBO, importance-sampled log p(x)), the latent
metrics (:mod:`.latents`), and the per-frame numbers of sequence models (:mod:`.sequences`)."""
from .bounds import (DRAW_BUDGET, draw_bytes, draw_plan, draw_progress, evaluate, global_latent_sites, heldout_log_weights, observed_frames,
                     iwae_log_likelihood, joint_log_weights, latent_kl_nats, test_elbo)
from .labels import classifier_accuracy
from .latents import (active_units, code_sparsity, guide_activity, has_sparse_prior, latent_activity, posterior_mean,
                      keep_rng, latent_variables, local_vector_sites, sample_latents, step_site,
                      variable_draws)

__all__ = ["evaluate", "DRAW_BUDGET", "draw_bytes", "draw_plan", "draw_progress", "test_elbo", "iwae_log_likelihood", "heldout_log_weights", "joint_log_weights", "global_latent_sites", "latent_kl_nats", "observed_frames",
           "local_vector_sites", "latent_variables", "variable_draws", "step_site", "keep_rng", "posterior_mean", "sample_latents", "latent_activity",
           "active_units", "code_sparsity", "guide_activity", "has_sparse_prior", "classifier_accuracy"]
