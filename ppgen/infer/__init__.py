"""Inference: the objectives (ELBOs, beta, IWAE), the training loop and its checkpoints."""
from .fit import LR_SCHEDULES, FitConfig, History, NonFiniteLossError, elbo_per_datapoint, fit, make_optimizer
from .objectives import ELBOS, IWAE, MeanFieldELBO, TraceELBO, log_importance_weights, with_beta

__all__ = ["fit", "FitConfig", "History", "NonFiniteLossError", "elbo_per_datapoint", "make_optimizer",
           "LR_SCHEDULES", "ELBOS", "TraceELBO", "MeanFieldELBO", "IWAE", "log_importance_weights", "with_beta"]
