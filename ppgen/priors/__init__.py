"""Named priors, one package: p(z) over a latent vector (:data:`PRIORS`) and per-step priors
p(z_t | h_{t-1}) of sequence models (:data:`STEP_PRIORS`). Swap a model's prior in one line::

    vae.prior = priors.Laplace(16)
    vae.prior = priors.VampPrior(vae.z_dim, guide.posterior, x_dim=vae.x_dim)
    vrnn.prior = priors.StandardNormalStep(vrnn.z_dim)
"""
from .steps import STEP_PRIORS, LearnedStepPrior, StandardNormalStep, StepPrior
from .vector import (PRIORS, Laplace, MixtureOfGaussians, Prior, SpikeAndSlab, StandardNormal, StudentT,
                     VampPrior)

__all__ = ["PRIORS", "Prior", "StandardNormal", "Laplace", "StudentT", "MixtureOfGaussians", "SpikeAndSlab", "VampPrior",
           "STEP_PRIORS", "StepPrior", "LearnedStepPrior", "StandardNormalStep"]
