"""Inference: the objectives (ELBOs, beta, IWAE), the one training loop and its checkpoints."""
from .fit import LR_SCHEDULES, FitConfig, History, elbo_per_datapoint, fit, make_optimizer
from .loop import NonFiniteLossError, Step, apply_update, train
from .objectives import ELBOS, IWAE, EnumELBO, MeanFieldELBO, TraceELBO, log_importance_weights, with_beta

__all__ = ["fit", "FitConfig", "History", "NonFiniteLossError", "elbo_per_datapoint", "make_optimizer",
           "LR_SCHEDULES", "train", "Step", "apply_update", "ELBOS", "TraceELBO", "MeanFieldELBO", "IWAE", "EnumELBO",
           "log_importance_weights", "with_beta"]
