"""Masked autoregressive networks (MADE, Germain et al., 2015, with NADE-style direct connections).

f_d(x_{<d}, c), d = 1..D: one masked hidden layer plus direct connections from x_{<d}, with a
context c (a decoder's output) added to the hidden pre-activations and to the logits. The
masks make f_d depend on x_1..x_{d-1} only. Two output kinds:

* binary data (``levels=None``): one logit per dimension, f_d in R, for
  :class:`ppgen.distributions.AutoregressiveBernoulli`;
* data with L levels 0..L-1 (``levels=L``): L logits per dimension, f_d in R^L, for
  :class:`ppgen.distributions.AutoregressiveCategorical`.

With L levels x_{<d} enters as values scaled to the unit interval, x_j / (L - 1), not one-hot:
the levels of count data (the digits' 0..16) are ordered, so a value is a meaningful input; the
input layer stays D x hidden instead of D*L x hidden; and for L = 2 the input is the binary
net's own.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class MaskedAutoregressiveNet(nn.Module):
    """logits f_d(x_{<d}, c), d = 1..D, for contexts c of ``context_features = hidden + D * k``
    features, k = 1 (binary, ``levels=None``) or k = ``levels``.

    Output ``[..., D]`` for binary data, ``[..., D, levels]`` otherwise; the context's last
    ``D * k`` features are added to the logits in that (d, level) order, so with the masked
    weights at 0 the logits are exactly those features."""

    def __init__(self, x_dim: int, hidden: int, levels: int | None = None):
        super().__init__()
        if x_dim < 1 or hidden < 1:
            raise ValueError(f"x_dim and hidden must be positive, got {x_dim} and {hidden}")
        if levels is not None and int(levels) < 2:
            raise ValueError(f"levels must be at least 2 (or None for binary data), got {levels}")
        self.x_dim, self.hidden = int(x_dim), int(hidden)
        self.levels = None if levels is None else int(levels)
        k = self.outputs_per_dim
        # hidden unit h sees inputs 1..m_h and feeds outputs m_h+1..D (degrees spread evenly)
        degree = torch.arange(hidden) % max(x_dim - 1, 1) + 1
        inputs = torch.arange(1, x_dim + 1)
        in_mask = (inputs[None, :] <= degree[:, None]) & (x_dim > 1)
        out_mask = (inputs[:, None] > degree[None, :]).repeat_interleave(k, 0)     # all k logits of x_d alike
        self.register_buffer("in_mask", in_mask.float())                              # [H, D]
        self.register_buffer("out_mask", out_mask.float())                            # [D*k, H]
        self.register_buffer("direct_mask", torch.ones(x_dim, x_dim).tril(-1).repeat_interleave(k, 0))  # [D*k, D]
        bound_in, bound_out = 1 / math.sqrt(x_dim), 1 / math.sqrt(hidden)
        self.w_in = nn.Parameter(torch.empty(hidden, x_dim).uniform_(-bound_in, bound_in))
        self.w_out = nn.Parameter(torch.empty(x_dim * k, hidden).uniform_(-bound_out, bound_out))
        # direct connections start at 0: the net starts as the factorised law with logits c_out
        self.w_direct = nn.Parameter(torch.zeros(x_dim * k, x_dim))

    @property
    def outputs_per_dim(self) -> int:
        """Logits per data dimension: 1 (a Bernoulli logit) or ``levels``."""
        return 1 if self.levels is None else self.levels

    @property
    def context_features(self) -> int:
        return self.hidden + self.x_dim * self.outputs_per_dim

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Logits of x_d given x_{<d} and the context, for every d at once: ``[..., D]``
        (binary) or ``[..., D, levels]``. ``x`` holds values 0..levels-1 (0/1 when binary)."""
        c_hidden, c_out = context.split([self.hidden, self.x_dim * self.outputs_per_dim], -1)
        u = x if self.levels is None else x * (1.0 / (self.levels - 1))   # levels on the unit interval
        a = torch.relu(F.linear(u, self.w_in * self.in_mask) + c_hidden)
        logits = F.linear(a, self.w_out * self.out_mask) + F.linear(u, self.w_direct * self.direct_mask) + c_out
        return logits if self.levels is None else logits.unflatten(-1, (self.x_dim, self.levels))
