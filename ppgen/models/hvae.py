"""The hierarchical VAE: a stack of stochastic layers, as in the Ladder VAE (Sønderby et al.,
2016) and NVAE (Vahdat & Kautz, 2020)."""
from __future__ import annotations

from typing import Sequence

import pyro
import torch
from torch import nn

from .. import likelihoods, priors
from ..distributions.fast import ReparamNormal
from ..nn import MLP
from ..nn.mlp import gaussian_params
from .vae import check_vectors, with_data_likelihood


def layer_sites(layers: int) -> list[str]:
    """The latent site names of an L-layer hierarchy, bottom (next to x) to top: z1 .. zL.
    (No underscore: ``z_1`` would read as step 1 of a sequence variable ``z``.)"""
    return [f"z{layer + 1}" for layer in range(layers)]


class HierarchicalVAE(nn.Module):
    """Generative model with L stochastic layers, ``z_dims`` listed bottom to top::

        z_L ~ p(z_L)                                    site "zL", event [z_dims[-1]]  (self.prior, swappable)
        z_l ~ p(z_l | z_{l+1}) = N(mu_l(z_{l+1}), diag sigma_l(z_{l+1})^2)
                                                        site "zl", l = L-1 .. 1        (self.top_down[l-1])
        x_n ~ p(x | z_1) = lik(decoder(z_1))            site "x", observed             (self.likelihood)

    for n in the plate "data". ``top_down[l]`` maps z_{l+2} to the (loc, raw scale) of
    p(z_{l+1} | z_{l+2}) (an MLP by default): this top-down pass is the generative model's, and
    the matching :class:`ppgen.guides.LadderGuide` reuses it through :meth:`conditional`, so a
    hierarchy has one top-down path, as in the Ladder VAE. The top prior swaps in one line as
    the VAE's does (``hvae.prior = priors.MixtureOfGaussians(hvae.z_dim)``); ``z_dim`` is the top
    layer's size, the one a prior is built for.
    """

    def __init__(self, x_dim: int, z_dims: Sequence[int] = (32, 16), *,
                 likelihood: str | likelihoods.Likelihood = "categorical", prior: priors.Prior | None = None,
                 decoder: nn.Module | None = None, top_down: Sequence[nn.Module] | None = None,
                 hidden: int = 256, likelihood_kwargs: dict | None = None):
        super().__init__()
        self.z_dims = tuple(int(d) for d in z_dims)
        if len(self.z_dims) < 2 or min(self.z_dims) < 1:
            raise ValueError(f"a hierarchical VAE needs at least two layers of positive size, got z_dims={list(z_dims)}")
        self.x_dim, self.hidden = int(x_dim), int(hidden)
        self.likelihood = likelihood = likelihoods.make(likelihood, x_dim, likelihood_kwargs)
        self.prior = prior if prior is not None else priors.StandardNormal(self.z_dim)
        if top_down is None:
            top_down = [MLP(above, [self.hidden], 2 * size) for size, above in zip(self.z_dims, self.z_dims[1:])]
        if len(top_down) != self.layers - 1:
            raise ValueError(f"{self.layers} layers need {self.layers - 1} top-down networks, got {len(top_down)}")
        self.top_down = nn.ModuleList(top_down)
        self.decoder = decoder if decoder is not None else MLP(self.z_dims[0], [self.hidden], likelihood.out_features)

    @property
    def layers(self) -> int:
        return len(self.z_dims)

    @property
    def z_dim(self) -> int:
        """The top layer's size: what p(z_L), the swappable prior, is built for."""
        return self.z_dims[-1]

    @property
    def sites(self) -> list[str]:
        return layer_sites(self.layers)

    @classmethod
    def for_data(cls, data, z_dims: Sequence[int] = (32, 16), **kwargs) -> "HierarchicalVAE":
        """Build with the likelihood that suits a :class:`ppgen.data.Dataset`."""
        return cls(data.x_dim, z_dims, **with_data_likelihood(data, kwargs))

    def conditional(self, layer: int, z_above: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loc, scale) of p(z_{layer+1} | z_{layer+2}) for 0-based ``layer`` < L - 1, given the
        layer above: the top-down pass shared with the ladder guide."""
        return gaussian_params(self.top_down[layer](z_above))

    def forward(self, x: torch.Tensor) -> None:
        sites = self.sites
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample(sites[-1], self.prior())
            for layer in reversed(range(self.layers - 1)):
                z = pyro.sample(sites[layer], ReparamNormal(*self.conditional(layer, z)).to_event(1))
            pyro.sample("x", self.likelihood(self.decoder(z)), obs=x)

    def decode(self, z1: torch.Tensor):
        """p(x | z_1) as a distribution over flat data vectors."""
        return self.likelihood(self.decoder(z1))

    @torch.no_grad()
    def sample(self, n: int, mean: bool = True) -> torch.Tensor:
        """``n`` draws x ~ p(x), ancestrally down the hierarchy (the mean of p(x|z_1) when ``mean``)."""
        z = self.prior().sample((n,))
        for layer in reversed(range(self.layers - 1)):
            z = ReparamNormal(*self.conditional(layer, z)).sample()
        raw = self.decoder(z)
        return self.likelihood.mean(raw) if mean else self.likelihood(raw).sample()

    def check_data(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` naming the problem if ``x`` cannot be scored by this model."""
        check_vectors(self, x)
