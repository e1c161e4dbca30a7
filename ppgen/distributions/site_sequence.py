"""One variable along a sequence (sites ``name_0 .. name_{T-1}``), scored in one batched call.

Pyro computes each sample site's log-density separately. For a sequence model with T steps
that means T small ``log_prob`` calls per variable, each a handful of autograd nodes, which
costs more than the networks themselves at music-sized batches. A :class:`SiteSequence`
collects the per-step parameters (or takes them already batched) and the values recorded at
each step; when Pyro asks a step's distribution for ``log_prob(value)`` and ``value`` is the
very tensor recorded for that step, the answer is column ``t`` of one batched
``make(*params).log_prob(values)``. Any other value is scored directly, so a :class:`Step` is
always a correct distribution: the batching changes the cost, never the numbers.

Each step's distribution is masked: its log-density is 0 for sequences whose frame t is
padding (``mask[:, t]`` False), as ``dist.mask(mask[:, t])`` would make it.
"""
from __future__ import annotations

from typing import Callable

import pyro.distributions as dist
import torch
from pyro.distributions import TorchDistribution

from .declared import DeclaresMask, HasMarginals, marginal_log_prob


def normal(loc: torch.Tensor, scale: torch.Tensor):
    """N(loc, diag scale^2) with event dim 1: the form of every VRNN prior and guide step."""
    return dist.Normal(loc, scale).to_event(1)


def stack_steps(tensors, dim: int = -2) -> torch.Tensor:
    """Stack per-step tensors along a new time dim, broadcasting leading (particle) dims first:
    the first steps of a recurrence may lack the particle dim that later ones have."""
    shapes = {t.shape for t in tensors}
    if len(shapes) > 1:
        tensors = torch.broadcast_tensors(*tensors)
    return torch.stack(tensors, dim)


class SiteSequence:
    """The sites of one variable over the steps of a batch of sequences.

    ``make(*params)`` builds the distribution of one step (event dim 1) from parameter
    tensors of shape ``[..., B, P]``; the same call on parameters stacked to
    ``[..., B, T, P]`` must give the batched distribution. ``batched`` optionally gives the
    parameters for all steps up front (then ``step(t)`` needs none). ``mask`` is ``[B, T]``.
    """

    def __init__(self, make: Callable, mask: torch.Tensor, event_shape: tuple, *,
                 batched: tuple | None = None, reparameterized: bool = True):
        self.make, self.mask, self.event_shape = make, mask, torch.Size(event_shape)
        self.has_rsample = reparameterized
        self.batched = batched
        self._batched_views = [p.unbind(-2) for p in batched] if batched is not None else None
        self.params: list[tuple] = []
        self.values: list[torch.Tensor] = []
        self.all_batched = batched is not None
        self._log_prob = None

    def step(self, t: int, *params) -> "Step":
        """The distribution of step ``t`` (steps are added in order 0, 1, ...)."""
        if len(self.params) != t:
            raise ValueError(f"steps must be added in order: expected step {len(self.params)}, got {t}")
        if not params:
            if self._batched_views is None:
                raise ValueError("step() without parameters needs batched parameters")
            params = tuple(v[t] for v in self._batched_views)
        else:
            self.all_batched = False
        self.params.append(params)
        return Step(self, t, params, params[0].shape[:-1])

    def record(self, value: torch.Tensor) -> torch.Tensor:
        """Note the value that the site of the latest step took (sampled, replayed or observed)."""
        self.values.append(value)
        return value

    def log_prob(self) -> torch.Tensor:
        """Masked log-densities of all recorded values, ``[..., B, T]``, computed once."""
        if self._log_prob is None or self._log_prob.shape[-1] != len(self.values):
            if self.all_batched and len(self.params) == self.batched[0].shape[-2]:
                params = self.batched
            else:
                params = tuple(stack_steps(p) for p in zip(*self.params))
            lp = self.make(*params).log_prob(stack_steps(self.values))
            self._log_prob = lp.masked_fill(~self.mask[:, :lp.shape[-1]], 0.0)
        return self._log_prob

    def recorded(self, t: int, value: torch.Tensor) -> bool:
        return len(self.values) == len(self.params) and t < len(self.values) and value is self.values[t]


class Step(TorchDistribution, DeclaresMask, HasMarginals):
    """Distribution of one step of a :class:`SiteSequence`: samples as ``make(*params)``, log-density
    masked to 0 where ``mask[:, t]`` is False (its :attr:`declared_mask`)."""

    arg_constraints: dict = {}

    def __init__(self, seq: SiteSequence, t: int, params: tuple, batch_shape):
        self.seq, self.t, self.params = seq, t, params
        self.has_rsample = seq.has_rsample
        self._base = None
        super().__init__(batch_shape, seq.event_shape, validate_args=False)

    @property
    def base(self):
        if self._base is None:
            self._base = self.seq.make(*self.params)
        return self._base

    @property
    def support(self):
        return self.base.support

    @property
    def declared_mask(self) -> torch.Tensor:
        return self.seq.mask[:, self.t]

    def marginal_log_prob(self, value):
        return marginal_log_prob(self.base, value)

    @property
    def mean(self):
        return self.base.mean

    @property
    def variance(self):
        return self.base.variance

    def sample(self, sample_shape=torch.Size()):
        return self.base.sample(sample_shape)

    def rsample(self, sample_shape=torch.Size()):
        return self.base.rsample(sample_shape)

    def log_prob(self, value):
        if self.seq.recorded(self.t, value):
            return self.seq.log_prob()[..., self.t]
        return self.base.log_prob(value).masked_fill(~self.seq.mask[:, self.t], 0.0)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        if batch_shape == self.batch_shape:
            return self
        params = tuple(p.expand(*batch_shape, p.shape[-1]) for p in self.params)
        return Step(self.seq, self.t, params, batch_shape)
