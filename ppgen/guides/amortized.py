"""Amortized Gaussian guides: an encoder network maps x to the parameters of q(z | x)."""
from __future__ import annotations

from typing import Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.nn.functional import softplus

from ..distributions.fast import ReparamNormal
from ..nn.conv import conv_encoder
from ..nn.device import full_precision
from ..nn.mlp import MLP, Scale, gaussian_params


def mlp_encoder(x_dim: int, hidden: int | Sequence[int] = 256, input_scale: float = 1.0) -> nn.Module:
    """x -> features h: the shared body of the amortized guides (heads are added per guide)."""
    hidden = [hidden] if isinstance(hidden, int) else list(hidden)
    body = MLP(x_dim, hidden[:-1], hidden[-1])
    net = nn.Sequential(Scale(input_scale), body, nn.ReLU())
    net.out_features = hidden[-1]
    return net


class AmortizedGuide(nn.Module):
    """Shared plumbing: an encoder x -> h (an MLP by default; any module with an
    ``out_features`` attribute, e.g. a conv encoder) and a linear head h -> parameters."""

    def __init__(self, x_dim: int, z_dim: int, head_features: int, *, encoder: nn.Module | None = None,
                 hidden: int | Sequence[int] = 256, input_scale: float = 1.0):
        super().__init__()
        self.x_dim, self.z_dim = int(x_dim), int(z_dim)
        self.encoder = encoder if encoder is not None else mlp_encoder(x_dim, hidden, input_scale)
        self.head = nn.Linear(self.encoder.out_features, head_features)

    @classmethod
    def for_model(cls, model, **kwargs):
        """Size a guide for ``model`` (its x_dim, z_dim and the likelihood's input scale)."""
        kwargs.setdefault("input_scale", getattr(model.likelihood, "input_scale", 1.0))
        return cls(model.x_dim, model.z_dim, **kwargs)

    def forward(self, x: torch.Tensor) -> None:
        q = self.posterior(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", q)

    def posterior(self, x: torch.Tensor):
        """q(z | x) as a distribution with batch shape [N] and event shape [z_dim]."""
        raise NotImplementedError


class DiagonalNormalGuide(AmortizedGuide):
    """q(z | x) = N(mu(x), diag sigma(x)^2), site "z": the classic VAE encoder."""

    def __init__(self, x_dim: int, z_dim: int, **kwargs):
        super().__init__(x_dim, z_dim, 2 * z_dim, **kwargs)

    def posterior(self, x):
        return ReparamNormal(*gaussian_params(self.head(self.encoder(x)))).to_event(1)


class LowRankNormalGuide(AmortizedGuide):
    """q(z | x) = N(mu(x), W(x) W(x)^T + diag d(x)), W of shape [z_dim, rank], site "z":
    captures correlations between latent dimensions at O(z_dim * rank) cost."""

    def __init__(self, x_dim: int, z_dim: int, rank: int = 2, **kwargs):
        super().__init__(x_dim, z_dim, z_dim * (2 + rank), **kwargs)
        self.rank = int(rank)

    def posterior(self, x):
        out = full_precision(self.head(self.encoder(x)))
        loc, raw_diag, factor = out.split([self.z_dim, self.z_dim, self.z_dim * self.rank], dim=-1)
        factor = factor.reshape(*factor.shape[:-1], self.z_dim, self.rank)
        # small factor scale at init keeps early training close to the diagonal guide
        return dist.LowRankMultivariateNormal(loc, 0.1 * factor, softplus(raw_diag) + 1e-4)


def conv_guide(guide_cls, model, hidden: int | None = None, width: int | None = None, **kwargs):
    """``guide_cls.for_model(model, encoder=conv_encoder(...))`` for any amortized guide class
    (diag_normal, lowrank_normal, iaf, spike_and_slab), the encoder sized for an image model's
    ``image_shape`` (a :class:`ppgen.models.ConvVAE`): ``hidden`` dense units and ``width``
    channels at full resolution, the model's own sizes by default."""
    if not (isinstance(guide_cls, type) and issubclass(guide_cls, AmortizedGuide)):
        raise ValueError(f"{getattr(guide_cls, '__name__', guide_cls)} is not an amortized guide and cannot take a "
                         "conv encoder; use diag_normal, lowrank_normal, iaf or spike_and_slab")
    encoder = conv_encoder(model.image_shape, hidden or model.hidden, width=width or model.width,
                           input_scale=model.likelihood.input_scale)
    return guide_cls.for_model(model, encoder=encoder, **kwargs)
