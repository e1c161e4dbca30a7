"""A DCGAN-style companion: an implicit generative model trained adversarially.

The generator defines p(x) only implicitly, as the push-forward of z ~ N(0, I) through a
deconvolution net, so there is no likelihood to report; compare it with the Pyro models
through sample-quality metrics (:mod:`ppgen.companions.quality`) instead. The discriminator is the
same conv encoder that amortized guides use, with one logit out.

Loss: the non-saturating GAN loss (Goodfellow et al., 2014), stabilised by either spectral
normalisation of the discriminator (``spectral_norm=True``) or the R1 gradient penalty
``gamma/2 * E_data ||grad_x D(x)||^2`` (Mescheder et al., 2018; ``gradient_penalty=gamma``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..data.base import check_images
from ..infer import distributed
from ..infer.precision import check_precision
from ..infer.loop import Step, train
from ..nn.conv import conv_channels
from ..nn.dcgan import Discriminator, Generator


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """-log D(x) - log(1 - D(G(z))), averaged: the discriminator's cross-entropy."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """-log D(G(z)): the non-saturating generator loss (strong gradients early on, when the
    discriminator rejects every sample)."""
    return F.softplus(-fake_logits).mean()


def r1_penalty(discriminator: nn.Module, real: torch.Tensor) -> torch.Tensor:
    """E_data ||grad_x D(x)||^2 on real data (R1; Mescheder et al., 2018)."""
    real = real.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(discriminator(real).sum(), real, create_graph=True)
    return grad.pow(2).sum(-1).mean()


@dataclass
class GANConfig:
    """What shapes a run; saved in the checkpoint and compared on resume. ``width``: channels
    at full resolution, doubling per halving (DCGAN)."""

    image_shape: tuple = (1, 32, 32)
    z_dim: int = 32
    width: int = 32
    epochs: int = 20
    batch_size: int = 64
    lr: float = 2e-4
    betas: tuple = (0.5, 0.999)
    spectral_norm: bool = False
    gradient_penalty: float = 0.0
    seed: int = 0
    precision: str = "fp32"

    def __post_init__(self):
        self.image_shape, self.betas = tuple(int(s) for s in self.image_shape), tuple(float(b) for b in self.betas)
        check_precision(self.precision)
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or self.gradient_penalty < 0:
            raise ValueError("epochs and batch_size must be >= 1, lr > 0 and gradient_penalty >= 0")


def gan_step(gen: Generator, disc: Discriminator, opt_g, opt_d, cfg: GANConfig, batch: tuple, t: int,
             apply) -> dict:
    """One step of the loop: a discriminator update on a real batch against G(z), then a
    generator update against the updated discriminator. Returns the losses and the mean D
    probabilities on real (``d_real``) and generated (``d_fake``) images."""
    (real,) = batch
    fake = gen(torch.randn(real.shape[0], cfg.z_dim, device=real.device))
    real_logits, fake_logits = disc(real), disc(fake.detach())
    d_loss = discriminator_loss(real_logits, fake_logits)
    if cfg.gradient_penalty:
        d_loss = d_loss + 0.5 * cfg.gradient_penalty * r1_penalty(disc, real)
    probabilities = torch.stack([torch.sigmoid(real_logits).mean(), torch.sigmoid(fake_logits).mean()]).detach()
    d_value = apply(d_loss, opt_d, "discriminator loss")
    g_loss = generator_loss(disc(fake))
    g_value = apply(g_loss, opt_g, "generator loss")
    d_real, d_fake = probabilities.tolist()  # one read for both (each apply read its loss once)
    return {"d_loss": d_value, "g_loss": g_value, "d_real": d_real, "d_fake": d_fake}


def train_gan(data: torch.Tensor, image_shape: Sequence[int], *, generator: Generator | None = None,
              discriminator: Discriminator | None = None, device="auto", checkpoint: str | Path | None = None,
              resume: bool = False, progress: bool = True, **settings) -> dict:
    """Train a GAN on flat images ``data`` ``[N, C*H*W]`` with values in [0, 1]; ``settings``
    are the fields of :class:`GANConfig` (``z_dim``, ``width``, ``epochs``, ``batch_size``,
    ``lr``, ``betas``, ``spectral_norm``, ``gradient_penalty``, ``seed``).

    Returns ``{"generator", "discriminator", "history"}``; ``history`` holds per-epoch lists
    (``epoch``, ``d_loss``, ``g_loss``, ``d_real`` and ``d_fake``: mean D probabilities on
    real and generated batches, ``seconds``). Unless passed in, the networks are built after
    seeding. Trained by the one loop (:func:`ppgen.infer.loop.train`): atomic checkpoints,
    exact resume up to ``epochs``, and a non-finite loss stops training before its update.
    """
    cfg = GANConfig(image_shape=image_shape, **settings)
    data = check_images(data, cfg.image_shape)

    def make_step(dev) -> Step:
        widths = conv_channels(cfg.width)
        gen = generator if generator is not None else Generator(cfg.z_dim, cfg.image_shape, widths[::-1])
        disc = (discriminator if discriminator is not None
                else Discriminator(cfg.image_shape, widths, spectral_norm=cfg.spectral_norm))
        gen.to(dev), disc.to(dev)
        opt_g = torch.optim.Adam(gen.parameters(), lr=cfg.lr, betas=cfg.betas)
        opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.lr, betas=cfg.betas)
        # under torchrun DDP averages each net's gradients over the processes; the parts stay the plain nets
        return Step(partial(gan_step, distributed.data_parallel(gen), distributed.data_parallel(disc), opt_g, opt_d, cfg),
                    {"generator": gen, "discriminator": disc, "opt_g": opt_g, "opt_d": opt_d})

    step, history = train(make_step, data, asdict(cfg), device=device, checkpoint=checkpoint, resume=resume,
                          progress=progress, desc="gan")
    return {"generator": step.parts["generator"], "discriminator": step.parts["discriminator"], "history": history}
