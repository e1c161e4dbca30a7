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

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..infer.checkpoint import rng_state, save_atomic
from ..nn.dcgan import Discriminator, Generator
from ..nn.device import resolve_device
from ..data.base import check_images
from ..infer.resume import resume_from, stop_if_not_finite


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
    """What shapes a run; saved in the checkpoint and compared on resume."""

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


def train_gan(data: torch.Tensor, image_shape: Sequence[int], *, z_dim: int = 32, width: int = 32,
              epochs: int = 20, batch_size: int = 64, lr: float = 2e-4, betas: tuple = (0.5, 0.999),
              spectral_norm: bool = False, gradient_penalty: float = 0.0, generator: Generator | None = None,
              discriminator: Discriminator | None = None, device="auto", seed: int = 0,
              checkpoint: str | Path | None = None, resume: bool = False, progress: bool = True) -> dict:
    """Train a GAN on flat images ``data`` ``[N, C*H*W]`` with values in [0, 1].

    Returns ``{"generator", "discriminator", "history"}``; ``history`` holds per-epoch lists
    (``epoch``, ``d_loss``, ``g_loss``, ``d_real`` and ``d_fake``: mean D probabilities on
    real and generated batches, ``seconds``). Unless passed in, the networks are built after
    seeding, with ``width`` channels at full resolution doubling per halving (DCGAN).

    With ``checkpoint`` the state (networks, optimisers, RNG, history) is written atomically
    after every epoch; ``resume=True`` continues from it exactly, up to ``epochs`` in total.
    A non-finite loss raises ``RuntimeError`` before the update it would drive; checkpoints
    are written only at the end of an epoch, so the last one on disk is the last good state.
    """
    cfg = GANConfig(tuple(int(s) for s in image_shape), int(z_dim), int(width), int(epochs), int(batch_size),
                    float(lr), tuple(float(b) for b in betas), bool(spectral_norm), float(gradient_penalty),
                    int(seed))
    data = check_images(data, cfg.image_shape)
    if cfg.epochs < 1 or cfg.batch_size < 1 or cfg.lr <= 0 or cfg.gradient_penalty < 0:
        raise ValueError("epochs and batch_size must be >= 1, lr > 0 and gradient_penalty >= 0")
    dev = resolve_device(device)
    data = data.to(dev)

    torch.manual_seed(cfg.seed)
    widths = [cfg.width * 2 ** i for i in range(4)]  # DCGAN: channels double as maps halve
    gen = generator if generator is not None else Generator(cfg.z_dim, cfg.image_shape, widths[::-1])
    disc = (discriminator if discriminator is not None
            else Discriminator(cfg.image_shape, widths, spectral_norm=cfg.spectral_norm))
    gen.to(dev), disc.to(dev)
    opt_g = torch.optim.Adam(gen.parameters(), lr=cfg.lr, betas=cfg.betas)
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.lr, betas=cfg.betas)
    history = {"epoch": [], "d_loss": [], "g_loss": [], "d_real": [], "d_fake": [], "seconds": []}
    start = 0
    if resume:
        history, start = resume_from(checkpoint, asdict(cfg), dev,
                                     {"generator": gen, "discriminator": disc, "opt_g": opt_g, "opt_d": opt_d})

    n = data.shape[0]
    steps = math.ceil(n / cfg.batch_size)
    for epoch in tqdm(range(start, cfg.epochs), desc="gan", disable=not progress, initial=start, total=cfg.epochs):
        t0 = time.perf_counter()
        gen.train(), disc.train()
        perm = torch.randperm(n).to(dev)
        sums = dict.fromkeys(("d_loss", "g_loss", "d_real", "d_fake"), 0.0)
        for i in range(steps):
            real = data[perm[i * cfg.batch_size:(i + 1) * cfg.batch_size]]
            z = torch.randn(real.shape[0], cfg.z_dim, device=dev)
            fake = gen(z)
            real_logits, fake_logits = disc(real), disc(fake.detach())
            d_loss = discriminator_loss(real_logits, fake_logits)
            if cfg.gradient_penalty:
                d_loss = d_loss + 0.5 * cfg.gradient_penalty * r1_penalty(disc, real)
            stop_if_not_finite(d_loss, "discriminator loss", epoch, i, checkpoint, last_epoch=epoch)
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()

            g_loss = generator_loss(disc(fake))
            stop_if_not_finite(g_loss, "generator loss", epoch, i, checkpoint, last_epoch=epoch)
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()

            w = real.shape[0] / n
            sums["d_loss"] += d_loss.item() * w
            sums["g_loss"] += g_loss.item() * w
            sums["d_real"] += torch.sigmoid(real_logits).mean().item() * w
            sums["d_fake"] += torch.sigmoid(fake_logits).mean().item() * w
        history["epoch"].append(epoch + 1)
        for k, v in sums.items():
            history[k].append(v)
        history["seconds"].append(time.perf_counter() - t0)
        if checkpoint:
            save_atomic(checkpoint, {
                "config": asdict(cfg), "epoch": epoch + 1, "history": history, "rng": rng_state(),
                "generator": gen.state_dict(), "discriminator": disc.state_dict(),
                "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
            })
    return {"generator": gen, "discriminator": disc, "history": history}
