"""Named priors p(z) over a latent vector of size ``z_dim``.

A prior is a small ``nn.Module`` whose call returns a distribution with event shape
``[z_dim]``; learnable priors (the mixture) carry their parameters, fixed ones keep their
constants as buffers so that ``.to(device)`` moves them. Swap a model's prior in one line::

    vae.prior = priors.Laplace(16)
"""
from __future__ import annotations

import math

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
    #: whether the prior reads the guide's encoder (given by :meth:`use_guide`, as the VampPrior's
    #: pseudo-inputs are encoded): only for guides of flat vectors
    needs_guide = False

    def __init__(self, z_dim: int):
        super().__init__()
        self.z_dim = int(z_dim)
        self.register_buffer("zero", torch.zeros(()))  # follows the model's device and dtype

    def _zeros(self):
        return self.zero.expand(self.z_dim)

    def use_guide(self, guide, data: torch.Tensor | None = None) -> None:
        """Hand the prior the model's guide once both are built (``data``: rows of x it may
        start from). Priors defined through the guide's encoder (:class:`ppgen.priors.VampPrior`)
        keep ``guide.posterior``; a prior of its own, like this one, needs nothing."""


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


class _UniformMixture(dist.MixtureSameFamily):
    """(1/K) sum_k q_k(z) over K components of one family (batch shape [K]). Its log_prob
    expands z across the components before scoring it, rather than leaving the broadcast to
    the components: a conditional flow's inverse (the IAF guide's q(z | u_k)) takes its
    context with batch shape [K] and cannot broadcast a z of shape [..., 1, z_dim] itself."""

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        events = len(self.event_shape)
        k = self.mixture_distribution.logits.shape[-1]
        value = value.unsqueeze(-1 - events)
        value = value.expand(*value.shape[:-1 - events], k, *self.event_shape)
        log_q = self.component_distribution.log_prob(value)  # [..., K]
        return log_q.logsumexp(-1) - math.log(k)


class VampPrior(Prior):
    """The VampPrior (Tomczak & Welling, 2018): p(z) = (1/K) sum_k q(z | u_k), the guide's own
    posterior q(z | x) at K learned pseudo-inputs u_k, a mixture the encoder keeps close to
    the aggregate posterior.

    The prior reaches the encoder through ``posterior``, a callable x -> q(z | x) with batch
    shape [N] and event shape [z_dim] (``guide.posterior``). It is a plain attribute, not a
    submodule: the model's state_dict holds the pseudo-inputs (``prior.pseudo_inputs``, the
    prior's own parameter) but not a second copy of the guide's weights, which stay the
    guide's, and the gradient of log p(z) through the encoder reaches them all the same. So
    model and guide share nothing but that one reference, set in one line::

        vae.prior = priors.VampPrior(vae.z_dim, guide.posterior, x_dim=vae.x_dim)

    or, when the prior is built before the guide (the registry, ``ppgen train --prior
    vampprior``), by :meth:`use_guide` once the guide exists. Pseudo-inputs start as
    ``pseudo_inputs`` when given (their number is then K), else as K rows of the ``data`` handed to :meth:`use_guide`,
    else as small noise around 0.5 (unit-scaled data)."""

    name = "vampprior"
    needs_guide = True

    def __init__(self, z_dim: int, posterior=None, *, components: int = 50, x_dim: int | None = None,
                 pseudo_inputs: torch.Tensor | None = None, seed: int = 0):
        super().__init__(z_dim)
        if components < 1:
            raise ValueError(f"the VampPrior needs at least one pseudo-input, got components={components}")
        self.components, self.seed = int(components), int(seed)
        self.posterior = posterior
        # the pseudo-inputs' size is that of x: known now when given, else when the guide is
        self.register_parameter("pseudo_inputs", None)
        if pseudo_inputs is not None:
            self.components = pseudo_inputs.shape[0]
            self.pseudo_inputs = nn.Parameter(pseudo_inputs.detach().clone().to(self.zero.dtype))
        elif x_dim is not None:
            self.pseudo_inputs = nn.Parameter(self._initial(int(x_dim)))

    def use_guide(self, guide, data: torch.Tensor | None = None) -> None:
        """Take ``guide.posterior`` as the encoder q(z | x) (an amortized guide), and create the
        pseudo-inputs, sized ``guide.x_dim``, if they do not exist yet: K rows of ``data`` (drawn
        with the prior's seed) when given. Call before loading a checkpoint or moving the model."""
        self.posterior = guide.posterior
        if self.pseudo_inputs is None:
            self.pseudo_inputs = nn.Parameter(self._initial(int(guide.x_dim), data))

    def _initial(self, x_dim: int, data: torch.Tensor | None = None) -> torch.Tensor:
        """K starting pseudo-inputs, on the prior's device and dtype: rows of ``data`` (without
        replacement where there are enough), else noise around 0.5."""
        g = torch.Generator().manual_seed(self.seed)
        if data is None:
            start = 0.5 + 0.01 * torch.randn(self.components, x_dim, generator=g)
        elif data.dim() != 2 or data.shape[1] != x_dim:
            raise ValueError(f"VampPrior pseudo-inputs start from rows of shape [N, {x_dim}], got {tuple(data.shape)}")
        else:
            n = data.shape[0]
            rows = torch.randperm(n, generator=g)[:self.components] if n >= self.components else \
                torch.randint(n, (self.components,), generator=g)
            start = data.detach()[rows.to(data.device)]
        return start.to(self.zero.device, self.zero.dtype)

    def forward(self):
        if self.posterior is None or self.pseudo_inputs is None:
            raise ValueError("the vampprior prior has no encoder yet: give it the guide with "
                             "prior.use_guide(guide) (or VampPrior(z_dim, guide.posterior, x_dim=...))")
        components = self.posterior(self.pseudo_inputs)
        if components.batch_shape != (self.components,) or components.event_shape != (self.z_dim,):
            raise ValueError(f"the vampprior prior needs q(z | x) with batch shape [{self.components}] and event shape "
                             f"[{self.z_dim}] at its pseudo-inputs, got {tuple(components.batch_shape)} and "
                             f"{tuple(components.event_shape)}")
        weights = dist.Categorical(logits=self.pseudo_inputs.new_zeros(self.components))
        return _UniformMixture(weights, components)


PRIORS = {
    "normal": StandardNormal,
    "laplace": Laplace,
    "student_t": StudentT,
    "mixture": MixtureOfGaussians,
    "spike_and_slab": SpikeAndSlab,
    "vampprior": VampPrior,
}
