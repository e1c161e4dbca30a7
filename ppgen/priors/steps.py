"""Per-step priors p(z_t | h_{t-1}) of sequence models (the VRNN): called with the recurrent
state h ``[..., hidden]``, they return the (loc, scale) of a diagonal Gaussian over z_t
(:class:`StepPrior`).

Swap a VRNN's prior in one line: ``vrnn.prior = priors.StandardNormalStep(vrnn.z_dim)``.
"""
from __future__ import annotations

import torch
from torch import nn

from ..nn.mlp import MLP, gaussian_params


class StepPrior(nn.Module):
    """p(z_t | h_{t-1}) over ``[z_dim]``: ``prior(h)`` maps states ``[..., hidden]`` to the
    (loc, scale) of a diagonal Gaussian, each ``[..., z_dim]``. ``hidden`` is the state size
    the prior reads (None: it ignores the state). Models check both sizes on assignment."""

    name = "step_prior"

    def __init__(self, z_dim: int, hidden: int | None = None):
        super().__init__()
        self.z_dim = int(z_dim)
        self.hidden = None if hidden is None else int(hidden)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class LearnedStepPrior(StepPrior):
    """p(z_t | h_{t-1}) = N(mu(h_{t-1}), diag sigma(h_{t-1})^2), an MLP of the RNN state: the
    VRNN's learned conditional prior."""

    name = "learned"

    def __init__(self, z_dim: int, hidden: int):
        super().__init__(z_dim, hidden)
        self.net = MLP(hidden, [hidden], 2 * z_dim)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return gaussian_params(self.net(h))


class StandardNormalStep(StepPrior):
    """p(z_t) = N(0, I) at every step, whatever h_{t-1} (the STORN prior, Bayer & Osendorfer 2014).
    ``hidden`` is accepted so that every step prior is built as ``cls(z_dim, hidden)``; it is unused."""

    name = "standard"

    def __init__(self, z_dim: int, hidden: int | None = None):
        super().__init__(z_dim)
        self.register_buffer("zero", torch.zeros(()))  # follows the model's device and dtype

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        zeros = self.zero.expand(*h.shape[:-1], self.z_dim)
        return zeros, zeros + 1.0


STEP_PRIORS = {"learned": LearnedStepPrior, "standard": StandardNormalStep}
