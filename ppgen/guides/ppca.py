"""The exact posterior of probabilistic PCA as a guide: the reference that variational fits
and their diagnostics are checked against (:mod:`ppgen.models.ppca` has the closed forms)."""
from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from ..likelihoods import Normal
from ..models.ppca import ppca_posterior
from ..priors import StandardNormal


class ExactPPCAGuide(nn.Module):
    """q(z_n | x_n) = the exact PPCA posterior N(mean_n, scale^2 cov) read from a linear-
    decoder VAE's current parameters, site "z" in the plate "data". ``scale=1`` is the true
    posterior (the importance weights p(x, z) / q(z | x) are constant and equal p(x));
    ``scale < 1`` gives an over-confident guide with heavy-tailed weights (for a Gaussian
    the Pareto tail shape is k = 1 - scale^2), ``scale > 1`` an over-dispersed one with
    bounded weights.

    The guide has no parameters of its own; the model is kept outside the module tree so
    that an optimiser over ``model.parameters() + guide.parameters()`` sees each once."""

    def __init__(self, model, scale: float = 1.0):
        super().__init__()
        self.check_model(model)
        object.__setattr__(self, "_model", model)
        self.scale = float(scale)

    @staticmethod
    def check_model(model) -> None:
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
