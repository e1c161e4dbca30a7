"""DCGAN-style networks: a generator z -> images in [0, 1] and a discriminator x -> one logit.

Used by the GAN companion (:mod:`ppgen.companions.gan`) and held by the VAE-GAN model."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .conv import ConvEncoder, DeconvDecoder
from .device import full_precision


class Generator(nn.Module):
    """x = sigmoid(g(z)), z ~ N(0, I_{z_dim}): pixel probabilities in [0, 1], flat
    ``[..., C*H*W]`` (for binary data, read them as Bernoulli means).

    Batch norm between the transposed convolutions follows DCGAN (on binary sprites the
    generator without it collapsed to blank images in our runs). In training mode it
    normalises with the batch's statistics, so call ``.eval()`` before drawing samples that
    must not depend on the rest of their batch.
    """

    def __init__(self, z_dim: int, image_shape: Sequence[int], channels: Sequence[int] = (256, 128, 64, 32),
                 batch_norm: bool = True):
        super().__init__()
        self.z_dim, self.image_shape = int(z_dim), tuple(image_shape)
        self.decoder = DeconvDecoder(z_dim, image_shape, channels=channels, batch_norm=batch_norm)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decoder(z))

    def sample(self, n: int) -> torch.Tensor:
        """``n`` images from the generator, on the generator's device."""
        z = torch.randn(n, self.z_dim, device=next(self.parameters()).device)
        return self(z)


class Discriminator(nn.Module):
    """D(x): one logit per flat image ``[..., C*H*W] -> [...]`` (real vs generated). Logits
    and features are float32 even when the net runs in bfloat16 (``--precision bf16``), so
    the adversarial losses and the feature-matching distance are float32 sums."""

    def __init__(self, image_shape: Sequence[int], channels: Sequence[int] = (32, 64, 128, 256),
                 spectral_norm: bool = False):
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.encoder = ConvEncoder(image_shape, 1, channels, spectral_norm=spectral_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return full_precision(self.encoder(x).squeeze(-1))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate activations ``[..., feature_dim]``."""
        return full_precision(self.encoder.features(x))
