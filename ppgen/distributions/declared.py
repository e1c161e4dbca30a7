"""What a distribution can declare about itself beyond torch's interface, for diagnostics:

* its **mask**: where its log-density counts (True) and where it is 0 by construction
  (padded sequence steps);
* its **per-dimension marginals**: for a vector distribution (event dim 1), the log-density
  of each coordinate on its own, ``[..., D]`` (what a KL per latent dimension needs).

:func:`declared_mask` and :func:`marginal_log_prob` read them from any distribution. Standard
torch/Pyro types are handled by registries keyed by their class; a ppgen distribution
declares them by subclassing :class:`DeclaresMask` or :class:`HasMarginals`, so diagnostics
never name a family.
"""
from __future__ import annotations

import pyro.distributions as dist
import torch


class DeclaresMask:
    """A distribution whose log-density is 0 where :attr:`declared_mask` is False."""

    @property
    def declared_mask(self) -> torch.Tensor:
        """A bool tensor broadcastable to the batch shape: True where the log-density counts."""
        raise NotImplementedError


class HasMarginals:
    """A vector distribution (event dim 1) that can score each coordinate on its own."""

    def marginal_log_prob(self, value: torch.Tensor) -> torch.Tensor | None:
        """log p(value_d) of each coordinate d under its marginal: ``[..., D]`` for ``value
        [..., D]``; None where no cheap exact marginal exists."""
        raise NotImplementedError


def _independent_marginals(d, v):
    return d.base_dist.log_prob(v) if d.reinterpreted_batch_ndims == 1 and d.base_dist.event_dim == 0 else None


def _gaussian_marginals(d, v):
    return dist.Normal(d.mean, d.variance.sqrt()).log_prob(v)


def _mixture_marginals(d, v):
    comp = d.component_distribution
    if not (isinstance(comp, dist.Independent) and comp.base_dist.event_dim == 0):
        return None
    log_mix = d.mixture_distribution.logits.log_softmax(-1)[..., None]  # [..., K, 1]
    return torch.logsumexp(comp.base_dist.log_prob(v.unsqueeze(-2)) + log_mix, dim=-2)


#: per-dimension marginal log-densities of standard vector distributions, where cheap and exact
MARGINALS = {
    dist.Independent: _independent_marginals,
    dist.MultivariateNormal: _gaussian_marginals,
    dist.LowRankMultivariateNormal: _gaussian_marginals,
    dist.MixtureSameFamily: _mixture_marginals,
}

def _masked_mask(d):
    own = d._mask if isinstance(d._mask, torch.Tensor) else None if d._mask else torch.zeros((), dtype=torch.bool)
    return _both(own, declared_mask(d.base_dist))


def _independent_mask(d):
    # an entry of the outer batch counts where any of its reinterpreted inner entries does
    # (Pyro's DMM writes Normal(...).mask(m).to_event(1): the mask sits below Independent)
    inner = declared_mask(d.base_dist)
    if inner is None:
        return None
    inner = inner.expand(d.base_dist.batch_shape)
    n = d.reinterpreted_batch_ndims
    return inner.reshape(inner.shape[:inner.dim() - n] + (-1,)).any(-1)


def _base_mask(d):
    return declared_mask(d.base_dist)  # a wrapper whose batch shape broadcasts its base's (Expanded)


def _both(a, b):
    if a is None or b is None:
        return a if b is None else b
    return a & b


#: masks carried by standard distributions and by the wrappers around them, wherever Pyro lets
#: a user put one: ``d.mask(m)``, ``d.mask(m).to_event(n)``, ``d.to_event(n).mask(m)``, expanded
MASKS = {
    dist.MaskedDistribution: _masked_mask,
    dist.Independent: _independent_mask,
    dist.ExpandedDistribution: _base_mask,
}


def marginal_log_prob(d, value: torch.Tensor) -> torch.Tensor | None:
    """Per-coordinate marginal log-densities ``[..., D]`` of a vector distribution ``d`` at
    ``value``, or None where they are not available (not a vector, or no exact marginals)."""
    if d.event_dim != 1:
        return None
    if isinstance(d, HasMarginals):
        return d.marginal_log_prob(value)
    for cls, marginals in MARGINALS.items():
        if isinstance(d, cls):
            return marginals(d, value)
    return None


def declared_mask(d) -> torch.Tensor | None:
    """The mask a distribution carries itself or through the distributions it wraps (None if
    none does): a bool tensor broadcastable to ``d.batch_shape``, True where the log-density
    counts."""
    if isinstance(d, DeclaresMask):
        return d.declared_mask
    for cls, mask in MASKS.items():
        if isinstance(d, cls):
            return mask(d)
    return None


__all__ = ["DeclaresMask", "HasMarginals", "marginal_log_prob", "declared_mask", "MARGINALS", "MASKS"]
