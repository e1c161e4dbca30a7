"""Masked autoregressive networks (MADE, Germain et al., 2015, with NADE-style direct connections).

f_d(x_{<d}, c), d = 1..D: one masked hidden layer plus direct connections from x_{<d}, with a
context c (a decoder's output) added to the hidden pre-activations and to the logits. The
masks make f_d depend on x_1..x_{d-1} only; :class:`ppgen.distributions.AutoregressiveBernoulli`
turns these logits into a normalised distribution.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class MaskedAutoregressiveNet(nn.Module):
    """logits f_d(x_{<d}, c), d = 1..D, for contexts c of ``context_features = hidden + D``."""

    def __init__(self, x_dim: int, hidden: int):
        super().__init__()
        if x_dim < 1 or hidden < 1:
            raise ValueError(f"x_dim and hidden must be positive, got {x_dim} and {hidden}")
        self.x_dim, self.hidden = int(x_dim), int(hidden)
        # hidden unit h sees inputs 1..m_h and feeds outputs m_h+1..D (degrees spread evenly)
        degree = torch.arange(hidden) % max(x_dim - 1, 1) + 1
        inputs = torch.arange(1, x_dim + 1)
        in_mask = (inputs[None, :] <= degree[:, None]) & (x_dim > 1)
        self.register_buffer("in_mask", in_mask.float())                              # [H, D]
        self.register_buffer("out_mask", (inputs[:, None] > degree[None, :]).float())  # [D, H]
        self.register_buffer("direct_mask", torch.ones(x_dim, x_dim).tril(-1))         # [D, D]
        bound_in, bound_out = 1 / math.sqrt(x_dim), 1 / math.sqrt(hidden)
        self.w_in = nn.Parameter(torch.empty(hidden, x_dim).uniform_(-bound_in, bound_in))
        self.w_out = nn.Parameter(torch.empty(x_dim, hidden).uniform_(-bound_out, bound_out))
        self.w_direct = nn.Parameter(torch.zeros(x_dim, x_dim))

    @property
    def context_features(self) -> int:
        return self.hidden + self.x_dim

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Logits ``[..., D]`` of x_d given x_{<d} and the context, for every d at once."""
        c_hidden, c_out = context.split([self.hidden, self.x_dim], -1)
        a = torch.relu(F.linear(x, self.w_in * self.in_mask) + c_hidden)
        return F.linear(a, self.w_out * self.out_mask) + F.linear(x, self.w_direct * self.direct_mask) + c_out
