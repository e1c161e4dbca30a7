"""Autoregressive distributions over discrete vectors, conditioned on a context: binary
(:class:`AutoregressiveBernoulli`) and with L levels (:class:`AutoregressiveCategorical`).

    p(x | c) = prod_{d=1..D} Bernoulli(x_d | sigmoid(f_d(x_{<d}, c)))

f is one masked hidden layer (MADE, Germain et al., 2015) plus direct connections from
x_{<d} to f_d (as in NADE), with the context c (a decoder's output) added to the hidden
pre-activations and to the logits. The masks make f_d depend on x_1..x_{d-1} only, so the
product is a normalised distribution over {0,1}^D and ``log_prob`` is exact, computed for all
d in one pass. Sampling is ancestral: D passes, one dimension at a time.

A factorised Bernoulli assumes the dimensions independent given c; for piano rolls that
means the notes of a chord are independent given the latent state, which the model pays for
in likelihood. With its masked weights at 0 this distribution *is* the factorised
Bernoulli with logits ``c[..., hidden:]``.

For integer data with L levels 0..L-1 (the digits' counts 0..16) the same net gives L logits
per dimension:

    p(x | c) = prod_{d=1..D} Categorical(x_d | softmax(f_d(x_{<d}, c))),  f_d in R^L

with x_{<d} entering f_d as values x_j / (L - 1). With the masked weights at 0 it is the
factorised categorical with logits ``c[..., hidden:]`` read as ``[D, L]``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pyro.distributions import TorchDistribution, constraints

from ..nn.device import full_precision
from ..nn.made import MaskedAutoregressiveNet


class _Ancestral(TorchDistribution):
    """Sampling and the Monte Carlo mean of an autoregressive law, from its ``_ancestral(shape)``:
    a draw x and the conditional means E[x_d | x_{<d}, c] along it (D passes of the net)."""

    mean_samples = 32  # ancestral draws behind the Monte Carlo ``mean``

    def _ancestral(self, sample_shape) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    @torch.no_grad()
    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        return self._ancestral(sample_shape)[0]

    @property
    @torch.no_grad()
    def mean(self) -> torch.Tensor:
        """A Monte Carlo estimate of E[x_d] = E[E[x_d | x_{<d}, c]]: the conditional means along
        ``mean_samples`` ancestral draws, averaged (no closed form exists)."""
        return self._ancestral((self.mean_samples,))[1].mean(0)


class AutoregressiveBernoulli(_Ancestral):
    """p(x | c) over x in {0,1}^D (event dim 1) with the logits of a :class:`MaskedAutoregressiveNet`.
    ``context`` is ``[..., hidden + D]``; the batch shape is its leading shape."""

    arg_constraints: dict = {}
    support = constraints.independent(constraints.boolean, 1)

    def __init__(self, net: MaskedAutoregressiveNet, context: torch.Tensor, validate_args=None):
        if net.levels is not None:
            raise ValueError(f"AutoregressiveBernoulli needs a binary MaskedAutoregressiveNet (levels=None); this one "
                             f"has {net.levels} levels (use AutoregressiveCategorical)")
        if context.shape[-1] != net.context_features:
            raise ValueError(f"context has {context.shape[-1]} features; the net needs hidden + D = "
                             f"{net.context_features}")
        self.net, self.context = net, context
        super().__init__(context.shape[:-1], torch.Size([net.x_dim]), validate_args=validate_args)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        logits = full_precision(self.net(value, self.context))  # the MADE net may run in bf16; the density not
        value = value.expand(logits.shape)
        return -F.binary_cross_entropy_with_logits(logits, value, reduction="none").sum(-1)

    def _ancestral(self, sample_shape) -> tuple[torch.Tensor, torch.Tensor]:
        """A draw x and the conditional probabilities p(x_d = 1 | x_{<d}, c) along it."""
        shape = torch.Size(sample_shape) + self.batch_shape
        context = self.context.expand(shape + self.context.shape[-1:])
        x = self.context.new_zeros(shape + self.event_shape)
        probs = torch.empty_like(x)
        for d in range(self.net.x_dim):  # f_d ignores x_{>=d}, so the zeros there do not matter
            probs[..., d] = torch.sigmoid(self.net(x, context)[..., d])
            x[..., d] = torch.bernoulli(probs[..., d])
        return x, probs


    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        return AutoregressiveBernoulli(self.net, self.context.expand(batch_shape + self.context.shape[-1:]))


class AutoregressiveCategorical(_Ancestral):
    """p(x | c) = prod_d Categorical(x_d | softmax(f_d(x_{<d}, c))) over x in {0..L-1}^D (event
    dim 1; values held as floats, as data are), with the ``[D, L]`` logits of a
    :class:`MaskedAutoregressiveNet` built with ``levels=L``. ``context`` is
    ``[..., hidden + D * L]``; the batch shape is its leading shape. ``log_prob`` is exact and
    takes one pass of the net; sampling is ancestral (D passes); everything is scored in float32
    (or float64 for a float64 model) whatever precision the net runs in."""

    arg_constraints: dict = {}

    def __init__(self, net: MaskedAutoregressiveNet, context: torch.Tensor, validate_args=None):
        if net.levels is None:
            raise ValueError("AutoregressiveCategorical needs a MaskedAutoregressiveNet built with levels=L; "
                             "this one is binary (use AutoregressiveBernoulli)")
        if context.shape[-1] != net.context_features:
            raise ValueError(f"context has {context.shape[-1]} features; the net needs hidden + D * levels = "
                             f"{net.context_features}")
        self.net, self.context = net, context
        super().__init__(context.shape[:-1], torch.Size([net.x_dim]), validate_args=validate_args)

    @property
    def levels(self) -> int:
        return self.net.levels

    @constraints.dependent_property(is_discrete=True, event_dim=1)
    def support(self):
        return constraints.independent(constraints.integer_interval(0, self.levels - 1), 1)

    def _log_softmax(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x_d = l | x_{<d}, c) for every d and l: ``[..., D, L]``, in full precision."""
        return full_precision(self.net(x, self.context)).log_softmax(-1)  # the net may run in bf16; the density not

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        log_p = self._log_softmax(value)                                   # [..., D, L]
        index = value.long().expand(log_p.shape[:-1]).unsqueeze(-1)        # [..., D, 1]
        return log_p.gather(-1, index).squeeze(-1).sum(-1)

    def _ancestral(self, sample_shape) -> tuple[torch.Tensor, torch.Tensor]:
        """A draw x and the conditional means E[x_d | x_{<d}, c] = sum_l l p(x_d = l | x_{<d}, c)
        along it."""
        shape = torch.Size(sample_shape) + self.batch_shape
        context = self.context.expand(shape + self.context.shape[-1:])
        dtype = torch.promote_types(self.context.dtype, torch.float32)     # a bf16 context still draws float32
        x = torch.zeros(shape + self.event_shape, dtype=dtype, device=self.context.device)
        means = torch.empty_like(x)
        levels = torch.arange(self.levels, dtype=dtype, device=x.device)
        for d in range(self.net.x_dim):  # f_d ignores x_{>=d}, so the zeros there do not matter
            probs = full_precision(self.net(x, context)[..., d, :]).to(dtype).softmax(-1)   # [..., L]
            means[..., d] = probs @ levels
            x[..., d] = torch.multinomial(probs.reshape(-1, self.levels), 1).reshape(shape).to(dtype)
        return x, means


    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        return AutoregressiveCategorical(self.net, self.context.expand(batch_shape + self.context.shape[-1:]))
