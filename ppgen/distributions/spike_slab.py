"""The spike-and-slab distribution used by the sparse VAE's prior and its recognition guide.

SpikeAndSlab(gamma, loc, scale) over z in R^D puts, independently per dimension, mass
``1 - gamma`` on exactly 0 (the spike) and ``gamma * N(loc, scale)`` elsewhere (the slab).
Densities are taken with respect to the mixed base measure (point mass at 0 + Lebesgue), so
``log p(z) - log q(z)`` between two spike-and-slab laws is a valid importance weight, and a
Normal-family q against a spike-and-slab p is also valid (q puts no mass on the spike).

Samples are exact (``z_d`` is exactly 0 on the spike); ``rsample`` passes gradients to the
spike probability through a straight-through relaxed Bernoulli, as in Variational Sparse
Coding (Tonolini et al., 2020). That gradient is biased; the ELBO value is not.
"""
from __future__ import annotations

import math

import torch
from pyro.distributions import TorchDistribution, constraints
from torch.distributions import kl_divergence, register_kl
from torch.distributions.utils import broadcast_all

from .declared import HasMarginals


class SpikeAndSlab(TorchDistribution, HasMarginals):
    arg_constraints = {
        "gamma": constraints.unit_interval,
        "loc": constraints.real,
        "scale": constraints.positive,
    }
    support = constraints.real
    has_rsample = True

    def __init__(self, gamma, loc, scale, temperature: float = 0.1, validate_args=None):
        self.gamma, self.loc, self.scale = broadcast_all(gamma, loc, scale)
        self.temperature = temperature
        shape = self.loc.shape
        super().__init__(shape[:-1], shape[-1:], validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        shape = torch.Size(batch_shape) + self.event_shape
        return SpikeAndSlab(
            self.gamma.expand(shape), self.loc.expand(shape), self.scale.expand(shape),
            self.temperature, validate_args=False,
        )

    def rsample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        gamma = self.gamma.expand(shape).clamp(1e-6, 1 - 1e-6)
        u = torch.rand(shape, dtype=gamma.dtype, device=gamma.device).clamp(1e-6, 1 - 1e-6)
        soft = torch.sigmoid((gamma.logit() + u.logit()) / self.temperature)
        hard = (soft > 0.5).to(soft.dtype)
        on = hard + soft - soft.detach()  # value: exact 0/1; gradient: relaxed
        slab = self.loc + self.scale * torch.randn(shape, dtype=gamma.dtype, device=gamma.device)
        return on * slab

    def sample(self, sample_shape=torch.Size()):
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, value):
        return self.marginal_log_prob(value).sum(-1)

    def marginal_log_prob(self, value):
        """log p(z_d) per dimension ``[..., D]``: the dimensions are independent by construction."""
        gamma = self.gamma.clamp(1e-6, 1 - 1e-6)
        slab = (
            -0.5 * ((value - self.loc) / self.scale) ** 2
            - self.scale.log() - 0.5 * math.log(2 * math.pi)
        )
        return torch.where(value == 0, torch.log1p(-gamma), gamma.log() + slab)

    @property
    def mean(self):
        return self.gamma * self.loc

    @property
    def variance(self):
        return self.gamma * (self.scale**2 + self.loc**2) - (self.gamma * self.loc) ** 2


@register_kl(SpikeAndSlab, SpikeAndSlab)
def _kl_spike_slab(q: SpikeAndSlab, p: SpikeAndSlab):
    """Closed form: KL of the on/off indicators plus the slab KL weighted by q's on-probability
    (Tonolini et al., 2020, eq. 7, for a general slab)."""
    g = q.gamma.clamp(1e-6, 1 - 1e-6)
    a = p.gamma.clamp(1e-6, 1 - 1e-6)
    kl_on = g * (g / a).log() + (1 - g) * ((1 - g) / (1 - a)).log()
    slab_q = torch.distributions.Normal(q.loc, q.scale)
    slab_p = torch.distributions.Normal(p.loc, p.scale)
    return (kl_on + g * kl_divergence(slab_q, slab_p)).sum(-1)
