"""The VAE with convolutional networks: a deconvolution decoder in p(x|z) and a conv encoder
for the amortized guides q(z|x)."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from .. import likelihoods, priors
from ..nn.conv import DeconvDecoder, conv_channels
from .vae import VAE


class ConvVAE(VAE):
    """Generative model (the VAE's, with a deconvolution decoder)::

        z_n ~ p(z)                                 site "z", event [z_dim]  (self.prior, swappable)
        x_n ~ p(x | z_n) = lik(deconv(z_n))        site "x", observed, flat [C*H*W]

    for n in the plate "data". ``deconv`` is a :class:`ppgen.nn.DeconvDecoder` that emits
    ``likelihood.params_per_dim`` raw parameters per pixel (1 Bernoulli logit for sprites,
    17 categorical logits for the digits counts). No batch norm anywhere, so p(x|z) of one
    datapoint never depends on the rest of its batch.

    Everything else is the VAE's: swap the prior by assignment (``vae.prior = priors.Laplace(16)``),
    and pair it with any amortized guide built on a conv encoder:
    ``ppgen.guides.conv_guide(IAFGuide, vae)``. ``width`` and ``hidden`` record the sizes that
    such a guide's encoder takes by default.
    """

    def __init__(self, x_dim: int, z_dim: int = 16, *, image_shape: Sequence[int],
                 likelihood: str | likelihoods.Likelihood = "bernoulli", prior: priors.Prior | None = None,
                 decoder: nn.Module | None = None, width: int = 32, hidden: int = 256,
                 likelihood_kwargs: dict | None = None):
        image_shape = tuple(int(s) for s in image_shape)
        if len(image_shape) != 3 or math.prod(image_shape) != int(x_dim):
            raise ValueError(f"image_shape {image_shape} does not match x_dim={x_dim} (need C*H*W = x_dim)")
        # the likelihood is resolved by VAE first: its params_per_dim sizes the decoder's output
        super().__init__(x_dim, z_dim, likelihood=likelihood, prior=prior, decoder=nn.Identity(),
                         likelihood_kwargs=likelihood_kwargs)
        lik = self.likelihood
        if decoder is None and lik.out_features != self.x_dim * lik.params_per_dim:  # e.g. an autoregressive one
            raise ValueError(f"{type(self).__name__} cannot use likelihood {lik.name!r}: its deconvolution decoder emits "
                             f"parameters per pixel ({self.x_dim} x {lik.params_per_dim}), and this likelihood needs a "
                             f"context of {lik.out_features} features per image; use vae or sparse_vae")
        self.image_shape, self.width, self.hidden = image_shape, int(width), int(hidden)
        self.decoder = decoder if decoder is not None else DeconvDecoder(
            self.z_dim, image_shape, self.likelihood.params_per_dim, conv_channels(width)[::-1])

    @classmethod
    def for_data(cls, data, z_dim: int = 16, **kwargs) -> "ConvVAE":
        """Build for an image :class:`ppgen.data.Dataset` (its ``image_shape`` and likelihood)."""
        if data.image_shape is None:
            raise ValueError(f"{cls.__name__} needs image data with an image_shape; dataset {data.name!r} has none")
        kwargs.setdefault("image_shape", data.image_shape)
        return super().for_data(data, z_dim, **kwargs)

    def images(self, z: torch.Tensor) -> torch.Tensor:
        """The mean of p(x|z) on the unit scale [0, 1] (what a discriminator or a figure sees)."""
        return self.likelihood.mean(self.decoder(z)) / self.likelihood.input_scale
