"""The VAE-GAN as a run (``ppgen train vaegan``): the conv VAE's model/guide pair built by
:mod:`ppgen.runs.conv_vae`, trained with its discriminator by
:func:`ppgen.companions.vaegan.train_vaegan`; reported both as a likelihood model (test ELBO,
IWAE log p(x)) and by sample quality."""
from __future__ import annotations

from dataclasses import asdict

import torch

from .. import data as data_mod
from ..companions.sample_quality import sample_quality, unit_samples
from ..companions.vaegan import VAEGANConfig, train_vaegan
from . import conv_vae
from .family import Family
from .vae import AMORTIZED, sample, save_figures

#: the network settings (the conv VAE's and D's spectral norm) and the training settings
DEFAULTS = {**conv_vae.DEFAULTS, "spectral_norm": False, **asdict(VAEGANConfig())}


def train(parts, dataset, config, **loop) -> dict:
    settings = {k: config[k] for k in asdict(VAEGANConfig())}
    return train_vaegan(parts["model"], parts["guide"], dataset.train, dataset.val, **loop, **settings)["history"]


def metrics(parts, dataset, config, k: int, progress: bool = False) -> dict:
    """Likelihood metrics (as the conv VAE's) and the sample quality of ``len(test)`` means of
    p(x|z), z ~ p(z) (seeded); ``progress``: bars for the importance draws and the feature
    classifier's training."""
    model, seed = parts["model"], config.get("seed", 0)
    out = conv_vae.metrics(model, parts["guide"], dataset, k=k, progress=progress)
    torch.manual_seed(seed)
    samples = unit_samples(model.eval(), dataset.test.shape[0])
    return {**out, **sample_quality(samples, dataset, seed=seed, device=samples.device, progress=progress)}


VAEGAN = Family(
    "vaegan", DEFAULTS, load_data=data_mod.load_in_memory,
    build=lambda config, dataset: dict(zip(("model", "guide"), conv_vae.build(config, dataset))),
    train=train, metrics=metrics,
    figures=lambda parts, dataset, config, run_dir: save_figures(parts["model"], parts["guide"], dataset, run_dir),
    sample=lambda parts, n, out_path, dataset, config, length: sample(parts["model"], n, out_path, dataset),
    priors=conv_vae.FLAT_FREE_PRIORS, guides=AMORTIZED,
    last={k: k for k in ("neg_elbo", "adversarial", "feature", "d_loss", "d_real", "d_fake")},
    train_iwae_k=conv_vae.TRAIN_IWAE_K)
