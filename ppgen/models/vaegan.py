"""VAE-GAN's generative model: the conv VAE's p(x, z), holding a discriminator beside it.

The discriminator never enters p(x, z); how it is trained together with the pair (the
adversarial and learned-similarity terms) is :mod:`ppgen.companions.vaegan`.
"""
from __future__ import annotations

from typing import Sequence

from torch import nn

from ..nn.conv import conv_channels
from ..nn.dcgan import Discriminator
from .conv_vae import ConvVAE


class VAEGAN(ConvVAE):
    """Generative model (the conv VAE's; the discriminator is not part of it)::

        z_n ~ p(z)                                 site "z", event [z_dim]  (self.prior, swappable)
        x_n ~ p(x | z_n) = lik(deconv(z_n))        site "x", observed

    plus ``self.discriminator``, D(x) -> one logit per image on the unit scale
    ``x / likelihood.input_scale`` (a :class:`ppgen.nn.Discriminator`). It is held here so
    that one state dict carries the whole VAE-GAN, but it never enters p(x, z): the Pyro model
    and every guide are exactly the :class:`ConvVAE`'s, and :func:`train_vaegan` gives D its
    own optimiser (:meth:`vae_parameters` lists the rest).
    """

    def __init__(self, x_dim: int, z_dim: int = 16, *, image_shape: Sequence[int],
                 discriminator: nn.Module | None = None, spectral_norm: bool = False, **kwargs):
        super().__init__(x_dim, z_dim, image_shape=image_shape, **kwargs)
        self.discriminator = discriminator if discriminator is not None else Discriminator(
            self.image_shape, conv_channels(self.width), spectral_norm=spectral_norm)

    def vae_parameters(self) -> list[nn.Parameter]:
        """The parameters of p(x, z) (decoder, likelihood, learnable prior), without D's."""
        own = {id(p) for p in self.discriminator.parameters()}
        return [p for p in self.parameters() if id(p) not in own]
