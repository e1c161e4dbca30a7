"""The variational autoencoder as a Pyro model (Kingma & Welling, 2014)."""
from __future__ import annotations

from typing import Sequence

import pyro
import torch
from torch import nn

from .. import likelihoods, priors
from ..nn import MLP


class VAE(nn.Module):
    """Generative model::

        z_n ~ p(z)                         site "z", event [z_dim]   (self.prior, swappable)
        x_n ~ p(x | z_n) = lik(decoder(z_n))   site "x", observed    (self.likelihood)

    for n in the plate "data". The decoder is any module mapping ``[..., z_dim]`` to the
    likelihood's raw parameters ``[..., likelihood.out_features]`` (an MLP by default, a
    linear map for probabilistic PCA, a deconvolution net for images). Swap the prior on a
    built model in one line: ``vae.prior = priors.Laplace(vae.z_dim)``.
    """

    def __init__(
        self,
        x_dim: int,
        z_dim: int = 16,
        *,
        likelihood: str | likelihoods.Likelihood = "categorical",
        prior: priors.Prior | None = None,
        decoder: nn.Module | None = None,
        hidden: int | Sequence[int] = 256,
        likelihood_kwargs: dict | None = None,
    ):
        super().__init__()
        self.x_dim, self.z_dim = int(x_dim), int(z_dim)
        self.likelihood = likelihood = likelihoods.make(likelihood, x_dim, likelihood_kwargs)
        self.prior = prior if prior is not None else self.default_prior(self.z_dim)
        hidden = [hidden] if isinstance(hidden, int) else list(hidden)
        self.decoder = decoder if decoder is not None else MLP(z_dim, hidden, likelihood.out_features)

    @staticmethod
    def default_prior(z_dim: int) -> priors.Prior:
        return priors.StandardNormal(z_dim)

    @classmethod
    def for_data(cls, data, z_dim: int = 16, **kwargs) -> "VAE":
        """Build with the likelihood that suits a :class:`ppgen.data.Dataset`."""
        return cls(data.x_dim, z_dim, **with_data_likelihood(data, kwargs))

    def forward(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self.prior())
            pyro.sample("x", self.likelihood(self.decoder(z)), obs=x)

    def decode(self, z: torch.Tensor):
        """p(x | z) as a distribution over flat data vectors."""
        return self.likelihood(self.decoder(z))

    @torch.no_grad()
    def sample(self, n: int, mean: bool = True) -> torch.Tensor:
        """``n`` draws x ~ p(x) (or the mean of p(x|z) for z ~ p(z) when ``mean``)."""
        z = self.prior().sample((n,))
        raw = self.decoder(z)
        return self.likelihood.mean(raw) if mean else self.likelihood(raw).sample()

    def check_data(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` naming the problem if ``x`` cannot be scored by this model."""
        check_vectors(self, x)


def with_data_likelihood(data, kwargs: dict) -> dict:
    """``kwargs`` of a vector model with the likelihood that suits a :class:`ppgen.data.Dataset`
    filled in where not given: its name and the keyword arguments it takes from the data."""
    kwargs = {"likelihood": data.likelihood, **kwargs}
    if isinstance(kwargs["likelihood"], str):
        kwargs.setdefault("likelihood_kwargs", likelihoods.kwargs_for_data(kwargs["likelihood"], data))
    return kwargs


def check_vectors(model, x: torch.Tensor) -> None:
    """Raise ``ValueError`` naming the problem unless ``x`` is ``[N, model.x_dim]`` in the support
    of ``model.likelihood``."""
    if x.dim() != 2 or x.shape[1] != model.x_dim:
        raise ValueError(f"{type(model).__name__} expects data of shape [N, {model.x_dim}], got {tuple(x.shape)}")
    model.likelihood.check(x)
