"""The recognition model of Variational Sparse Coding (Tonolini et al., 2020)."""
from __future__ import annotations

from torch.nn.functional import softplus

from ..distributions import SpikeAndSlab
from ..nn.device import full_precision
from .. import priors
from .amortized import AmortizedGuide


class SpikeAndSlabGuide(AmortizedGuide):
    """q(z | x) = prod_d [gamma_d(x) N(z_d; mu_d(x), sigma_d(x)^2) + (1 - gamma_d(x)) delta_0(z_d)],
    site "z". Pairs with the spike-and-slab prior only: against a prior without a point mass
    at zero, its exact zeros would have infinite KL."""

    def __init__(self, x_dim: int, z_dim: int, temperature: float = 0.1, **kwargs):
        super().__init__(x_dim, z_dim, 3 * z_dim, **kwargs)
        self.temperature = float(temperature)

    def check_model(self, model) -> None:
        prior = getattr(model, "prior", None)
        if not isinstance(prior, priors.SpikeAndSlab):
            raise ValueError(
                f"the spike_and_slab guide needs the spike_and_slab prior, but the model's prior is "
                f"{getattr(prior, 'name', type(prior).__name__)!r}"
            )

    def posterior(self, x):
        logit_gamma, loc, raw_scale = full_precision(self.head(self.encoder(x))).chunk(3, dim=-1)
        return SpikeAndSlab(logit_gamma.sigmoid(), loc, softplus(raw_scale) + 1e-4, self.temperature)
