"""An autoregressive Bernoulli distribution over binary vectors, conditioned on a context.

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
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pyro.distributions import TorchDistribution, constraints

from ..nn.device import full_precision
from ..nn.made import MaskedAutoregressiveNet


class AutoregressiveBernoulli(TorchDistribution):
    """p(x | c) over x in {0,1}^D (event dim 1) with the logits of a :class:`MaskedAutoregressiveNet`.
    ``context`` is ``[..., hidden + D]``; the batch shape is its leading shape."""

    arg_constraints: dict = {}
    support = constraints.independent(constraints.boolean, 1)
    mean_samples = 32  # ancestral draws behind the Monte Carlo ``mean``

    def __init__(self, net: MaskedAutoregressiveNet, context: torch.Tensor, validate_args=None):
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

    @torch.no_grad()
    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        return self._ancestral(sample_shape)[0]

    @property
    @torch.no_grad()
    def mean(self) -> torch.Tensor:
        """A Monte Carlo estimate of E[x_d] = E[p(x_d = 1 | x_{<d}, c)]: the conditional
        probabilities averaged over ``mean_samples`` ancestral draws (no closed form exists)."""
        return self._ancestral((self.mean_samples,))[1].mean(0)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        return AutoregressiveBernoulli(self.net, self.context.expand(batch_shape + self.context.shape[-1:]))
