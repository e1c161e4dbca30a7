"""Fully connected building blocks: the MLP, input scaling, and eval mode for a block."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Sequence

import torch
from torch import nn
from torch.nn.functional import softplus

from .device import full_precision


class MLP(nn.Sequential):
    """A fully connected network ``in_dim -> hidden... -> out_dim`` with a nonlinearity
    between layers and none after the last one (the caller decides what the outputs mean)."""

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int, activation=nn.ReLU):
        layers: list[nn.Module] = []
        dims = [in_dim, *hidden]
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), activation()]
        layers.append(nn.Linear(dims[-1], out_dim))
        super().__init__(*layers)
        self.in_dim, self.out_dim = in_dim, out_dim


@contextmanager
def eval_mode(*modules):
    """Eval mode inside the block (dropout off), each module's previous mode restored after."""
    modules = [m for m in modules if isinstance(m, nn.Module)]
    modes = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(modules, modes):
            m.train(mode)


class Scale(nn.Module):
    """Divides its input by a constant, so that encoders see data on a unit scale
    (digits counts 0..16 -> 0..1) while the likelihood still scores the raw values."""

    def __init__(self, scale: float):
        super().__init__()
        self.scale = float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / self.scale if self.scale != 1.0 else x


def gaussian_params(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a network output into the (loc, scale) of a diagonal Gaussian, in float32 even
    when the network ran in bfloat16 (:func:`full_precision`): the one place where a Gaussian
    head's output becomes distribution parameters (guides, step priors, flows' base)."""
    loc, raw_scale = full_precision(raw).chunk(2, dim=-1)
    return loc, softplus(raw_scale) + 1e-4
