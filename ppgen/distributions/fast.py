"""Speed-ups that rest on private torch internals, kept in one module.

Each one gives the same values and gradients as the plain version named in its docstring
(up to rounding) and says which private internal it relies on. ``tests/test_fast.py`` pins
every one of those internals, so a torch upgrade that changes them fails there, loudly,
rather than silently changing numbers; ``benchmarks/fast_paths.py`` measures what each one
saves (BENCHMARKS.md, "Speed-ups on private internals"), and one that stops paying for
itself is removed.

Internals relied on (torch 2.13):

* ``torch.distributions.utils._standard_normal``, ``Distribution._extended_shape`` and the
  instance flag ``Distribution._validate_args``: :class:`ReparamNormal`.
* ``torch.distributions.Categorical``'s ``_param`` / ``_num_events`` attributes and
  ``expand(batch_shape, _instance)``: :class:`LogSoftmaxCategorical`.
* ``Tensor._version`` (bumped by every in-place change): :func:`version_stamp`,
  :func:`unchanged_since`.
* the class default ``torch.distributions.Distribution._validate_args`` (what
  ``pyro.enable_validation`` sets): :func:`validation_default`, the cache key of
  :class:`ppgen.priors.StandardNormal`'s :class:`UnitNormal`.
"""
from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from torch.distributions.utils import _standard_normal

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class ReparamNormal(dist.Normal):
    """N(loc, scale^2): plain version ``dist.Normal(loc, scale)``. It remembers its last draw
    z = loc + scale * eps, so that log_prob of that very tensor is -eps^2/2 - log scale -
    log sqrt(2 pi), the same function of loc and scale (the same ELBO value and gradients, up
    to rounding) with fewer ops than recomputing (z - loc) / scale. Any other value, and any
    value under validation, takes the general formula. Relies on
    ``torch.distributions.utils._standard_normal`` (the draw ``Normal.rsample`` makes, so
    seeded draws match the plain version) and ``_extended_shape``."""

    def rsample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        eps = _standard_normal(shape, dtype=self.loc.dtype, device=self.loc.device)
        z = self.loc + eps * self.scale
        self._draw = (z, eps)
        return z

    def log_prob(self, value):
        draw = self.__dict__.get("_draw")
        if draw is None or value is not draw[0] or self._validate_args:
            return super().log_prob(value)
        return -0.5 * draw[1].square() - self.scale.log() - _HALF_LOG_2PI


class LogSoftmaxCategorical(dist.Categorical):
    """``dist.Categorical(logits=logits)`` (the plain version) normalised by one fused
    ``log_softmax`` instead of torch's ``logits - logits.logsumexp(-1)`` (several kernels
    forward and backward). Same values. Relies on Categorical's private ``_param`` and
    ``_num_events`` attributes (set here instead of by ``Categorical.__init__``) and on
    ``expand(batch_shape, _instance)``."""

    def __init__(self, logits, validate_args=None):
        if logits.dim() < 1:
            raise ValueError("`logits` parameter must be at least one-dimensional.")
        self.logits = logits.log_softmax(-1)
        self._param = self.logits
        self._num_events = logits.shape[-1]
        torch.distributions.Distribution.__init__(self, logits.shape[:-1], validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        return super().expand(batch_shape, self.__new__(type(self)) if _instance is None else _instance)


class UnitNormal(dist.Normal):
    """N(0, 1) (plain version ``dist.Normal(zeros, zeros + 1)``) whose log_prob is
    -z^2/2 - log sqrt(2 pi): three ops instead of the nine that the general loc/scale formula
    spends on constants. Everything else is ``dist.Normal``'s, so analytic KLs against Normal
    guides still apply. Only valid with loc 0 and scale 1."""

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        lp = -0.5 * value.square() - _HALF_LOG_2PI
        if lp.shape == self.batch_shape:  # the usual case; broadcast_shapes costs more than the math
            return lp
        return lp.expand(torch.broadcast_shapes(lp.shape, self.batch_shape))


def validation_default() -> bool:
    """Whether new distributions validate their arguments: torch's private class default
    ``Distribution._validate_args``, which ``pyro.enable_validation`` / ``validation_enabled``
    set. A distribution built once and reused must be rebuilt when it changes."""
    return torch.distributions.Distribution._validate_args


def version_stamp(tensors) -> tuple:
    """``(tensor, version)`` pairs: what :func:`unchanged_since` compares against. Relies on
    ``Tensor._version``, which every in-place change (``mul_``, an optimiser step, ``copy_``)
    increments. The plain alternative is to assume nothing and recompute."""
    return tuple((t, t._version) for t in tensors)


def unchanged_since(stamp: tuple, tensors) -> bool:
    """True when ``tensors`` are the very tensors of ``stamp``, in order, none changed in place since."""
    tensors = tuple(tensors)
    return len(tensors) == len(stamp) and all(t is s and t._version == v for t, (s, v) in zip(tensors, stamp))


__all__ = ["ReparamNormal", "LogSoftmaxCategorical", "UnitNormal", "validation_default", "version_stamp",
           "unchanged_since"]
