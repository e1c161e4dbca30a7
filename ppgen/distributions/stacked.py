"""Several draws' distributions of one site as one distribution with the draws on a batch dim.

A program that does not broadcast over a leading draw dimension is run once per draw
(:mod:`ppgen.infer.draws`); each run gives each site its own distribution. :class:`Stacked`
presents those K distributions as the one distribution a vectorized run would have given the
site: batch shape ``(K, 1, ..., *b)`` with the draws at ``dim`` (b the batch shape of one run,
padded with 1s to the plates right of the draws), so that everything that reads a site
(``log_prob``, ``sample``, ``mean``, ``event_dim``, its mask and per-dimension marginals) sees
the shapes it expects.
"""
from __future__ import annotations

import torch
from pyro.distributions import TorchDistribution

from .declared import DeclaresMask, HasMarginals, declared_mask, marginal_log_prob


class Stacked(TorchDistribution, DeclaresMask, HasMarginals):
    """The distributions ``parts`` of K draws, stacked at batch dim ``dim`` (negative, left of
    the batch dims of every part). Every part has the same event shape."""

    arg_constraints: dict = {}

    def __init__(self, parts: list, dim: int):
        if dim >= 0:
            raise ValueError(f"the draws' dim must be negative (counted from the right of the batch shape), got {dim}")
        event_shape = parts[0].event_shape
        if any(p.event_shape != event_shape for p in parts):
            raise ValueError(f"the draws' distributions differ in event shape: {sorted({tuple(p.event_shape) for p in parts})}")
        self.parts, self.dim = list(parts), dim
        self.inner = -dim - 1  # batch dims right of the draws
        batch = torch.broadcast_shapes(*(p.batch_shape for p in parts))
        if len(batch) > self.inner:
            raise ValueError(f"a draw's batch shape {tuple(batch)} has more dims than the {self.inner} right of the "
                             f"draws' dim {dim}")
        self.part_batch = batch
        super().__init__(torch.Size((len(parts),) + (1,) * (self.inner - len(batch)) + tuple(batch)), event_shape,
                         validate_args=False)

    @property
    def has_rsample(self) -> bool:
        return all(p.has_rsample for p in self.parts)

    @property
    def support(self):
        return self.parts[0].support

    def stack(self, tensors: list, event_ndim: int, sample_ndim: int = 0) -> torch.Tensor:
        """Each draw's tensor ``[*sample, *batch_k, *event]`` padded to the inner batch dims and
        stacked at the draws' dim: ``[*sample, K, 1.., *batch, *event]``."""
        out = []
        for t in tensors:
            batch = t.shape[sample_ndim:t.dim() - event_ndim]
            pad = (1,) * (self.inner - len(batch))
            out.append(t.reshape(t.shape[:sample_ndim] + pad + t.shape[sample_ndim:]))
        return torch.stack(torch.broadcast_tensors(*out), dim=sample_ndim)

    def _per_draw(self, value: torch.Tensor, event_ndim: int) -> list:
        """``value`` (broadcastable to ``[K, 1.., *batch, *event]``) cut into one tensor per
        draw, the padding dims removed: what the draw's own distribution scores."""
        shape = self.batch_shape + value.shape[value.dim() - event_ndim:]
        if value.dim() > len(shape):
            raise ValueError(f"a value of shape {tuple(value.shape)} has dims left of the draws "
                             f"(batch shape {tuple(self.batch_shape)}); stacked draws score one value per draw")
        value = value.expand(torch.broadcast_shapes(value.shape, shape))
        pad = self.inner - len(self.part_batch)  # the 1s between the draws and a draw's own batch dims
        return [v.reshape(v.shape[pad:]) if all(n == 1 for n in v.shape[:pad]) else v for v in value.unbind(0)]

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        parts = self._per_draw(value, self.event_dim)
        return self.stack([p.log_prob(v) for p, v in zip(self.parts, parts)], 0)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        sample_shape = torch.Size(sample_shape)
        return self.stack([p.sample(sample_shape) for p in self.parts], self.event_dim, len(sample_shape))

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        sample_shape = torch.Size(sample_shape)
        return self.stack([p.rsample(sample_shape) for p in self.parts], self.event_dim, len(sample_shape))

    @property
    def mean(self) -> torch.Tensor:
        return self.stack([p.mean for p in self.parts], self.event_dim)

    @property
    def variance(self) -> torch.Tensor:
        return self.stack([p.variance for p in self.parts], self.event_dim)

    @property
    def declared_mask(self) -> torch.Tensor | None:
        masks = [declared_mask(p) for p in self.parts]
        if all(m is None for m in masks):
            return None
        full = [torch.ones(self.part_batch, dtype=torch.bool) if m is None else m.expand(self.part_batch) for m in masks]
        return self.stack(full, 0)

    def marginal_log_prob(self, value: torch.Tensor) -> torch.Tensor | None:
        parts = self._per_draw(value, self.event_dim)
        marginals = [marginal_log_prob(p, v) for p, v in zip(self.parts, parts)]
        return None if any(m is None for m in marginals) else self.stack(marginals, 1)

    def expand(self, batch_shape, _instance=None):
        if torch.Size(batch_shape) == self.batch_shape:
            return self
        raise NotImplementedError(f"stacked draws of batch shape {tuple(self.batch_shape)} cannot be expanded to "
                                  f"{tuple(batch_shape)}")


__all__ = ["Stacked"]
