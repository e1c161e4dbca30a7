"""Named priors p(z) over a latent vector of size ``z_dim``.

A prior is a small ``nn.Module`` whose call returns a distribution with event shape
``[z_dim]``; learnable priors (the mixture) carry their parameters, fixed ones keep their
constants as buffers so that ``.to(device)`` moves them. Swap a model's prior in one line::

    vae.prior = priors.Laplace(16)
"""
from __future__ import annotations

import torch
import pyro.distributions as dist
from torch import nn

from ..distributions import SpikeAndSlab as _SpikeAndSlabDist
from ..distributions.fast import UnitNormal, validation_default


class Prior(nn.Module):
    """p(z) over ``[z_dim]``: ``prior()`` returns the distribution. ``sparse`` is the one rule
    for "does this prior make sparse codes" (evaluation then reports code sparsity)."""

    name = "prior"
    sparse = False

    def __init__(self, z_dim: int):
        super().__init__()
        self.z_dim = int(z_dim)
        self.register_buffer("zero", torch.zeros(()))  # follows the model's device and dtype

    def _zeros(self):
        return self.zero.expand(self.z_dim)


class StandardNormal(Prior):
    """p(z) = N(0, I)."""

    name = "normal"

    def forward(self):
        # built once per device/dtype (.to() replaces the buffer) and validation setting: the
        # prior has no parameters, and the model asks for it every step
        key = (self.zero, validation_default())
        cached = self.__dict__.get("_cached")
        if cached is None or cached[0][0] is not key[0] or cached[0][1] != key[1]:
            zeros = self._zeros()
            cached = (key, UnitNormal(zeros, zeros + 1.0).to_event(1))
            self.__dict__["_cached"] = cached
        return cached[1]


class Laplace(Prior):
    """p(z) = prod_d Laplace(0, b) with unit variance (b = 1/sqrt 2) by default: sparser codes
    than the Normal at the same variance, still a density, so any Normal-family guide fits."""

    name = "laplace"
    sparse = True

    def __init__(self, z_dim: int, scale: float = 2**-0.5):
        super().__init__(z_dim)
        self.scale = float(scale)

    def forward(self):
        zeros = self._zeros()
        return dist.Laplace(zeros, zeros + self.scale).to_event(1)


class StudentT(Prior):
    """p(z) = prod_d StudentT(df, 0, 1): heavy tails; no analytic KL against a Normal guide,
    so ``TraceMeanField_ELBO`` falls back to Monte Carlo for it."""

    name = "student_t"

    def __init__(self, z_dim: int, df: float = 3.0):
        super().__init__(z_dim)
        self.df = float(df)

    def forward(self):
        zeros = self._zeros()
        return dist.StudentT(zeros + self.df, zeros, zeros + 1.0).to_event(1)


class MixtureOfGaussians(Prior):
    """p(z) = sum_k pi_k N(mu_k, diag sigma_k^2) with learnable weights, means and scales.
    Means start spread out so that the components do not collapse onto each other."""

    name = "mixture"

    def __init__(self, z_dim: int, components: int = 10, seed: int = 0):
        super().__init__(z_dim)
        g = torch.Generator().manual_seed(seed)
        self.logits = nn.Parameter(torch.zeros(components))
        self.locs = nn.Parameter(torch.randn(components, z_dim, generator=g))
        self.log_scales = nn.Parameter(torch.zeros(components, z_dim))

    def forward(self):
        components = dist.Normal(self.locs, self.log_scales.clamp(-7, 5).exp()).to_event(1)
        return dist.MixtureSameFamily(dist.Categorical(logits=self.logits), components)


class SpikeAndSlab(Prior):
    """p(z) = prod_d [alpha N(z_d; 0, 1) + (1 - alpha) delta_0(z_d)] (Tonolini et al., 2020):
    exact zeros in the codes. Only guides that can put mass on the spike (the spike-and-slab
    guide) give a finite KL to it from the sparse side; Normal-family guides remain valid."""

    name = "spike_and_slab"
    sparse = True

    def __init__(self, z_dim: int, alpha: float = 0.5):
        super().__init__(z_dim)
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"spike-and-slab alpha must be in (0, 1), got {alpha}")
        self.alpha = float(alpha)

    def forward(self):
        zeros = self._zeros()
        return _SpikeAndSlabDist(zeros + self.alpha, zeros, zeros + 1.0)


PRIORS = {
    "normal": StandardNormal,
    "laplace": Laplace,
    "student_t": StudentT,
    "mixture": MixtureOfGaussians,
    "spike_and_slab": SpikeAndSlab,
}
