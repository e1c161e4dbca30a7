"""The DCGAN companion as a run (``ppgen train gan``): trained by :func:`ppgen.companions.gan.train_gan`
on the unit-scale images of a dataset, judged by sample quality (there is no likelihood)."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from .. import data as data_mod
from ..companions.gan import GANConfig, train_gan
from ..companions.sample_quality import sample_quality, unit_images, unit_samples
from ..figures.images import show_images
from ..nn.conv import conv_channels
from ..nn.dcgan import Discriminator, Generator
from .family import Family

#: train_gan's settings, with spectral norm and lr 1e-3 for runs: on sprites, 10 epochs without
#: spectral norm (lr 2e-4 or 1e-3) ended with blank images, and lr 2e-4 with it collapsed to few
#: modes (BENCHMARKS.md, "Sample quality")
DEFAULTS = {**{k: v for k, v in asdict(GANConfig()).items() if k != "image_shape"}, "lr": 1e-3,
            "spectral_norm": True}


def load_images(spec: str):
    """An image dataset whose training images are on the unit scale (checked up front)."""
    dataset = data_mod.load_in_memory(spec)
    unit_images(dataset, "train")
    return dataset


def build(config: dict, dataset) -> dict:
    """The generator and discriminator as :func:`ppgen.companions.gan.train_gan` builds them
    (DCGAN widths from ``width``)."""
    widths = conv_channels(config["width"])
    return {"generator": Generator(config["z_dim"], dataset.image_shape, widths[::-1]),
            "discriminator": Discriminator(dataset.image_shape, widths, spectral_norm=config["spectral_norm"])}


def train(parts, dataset, config, **loop) -> dict:
    settings = {k: config[k] for k in DEFAULTS}
    return train_gan(unit_images(dataset, "train"), dataset.image_shape, generator=parts["generator"],
                     discriminator=parts["discriminator"], **loop, **settings)["history"]


def quality(parts, dataset, config, k=None, progress: bool = False) -> dict:
    """Sample quality of ``len(test)`` generator samples (seeded), on the generator's device.
    ``k`` is unused: a GAN has no likelihood. ``progress``: a bar for the feature classifier's
    training, the part that takes time."""
    seed, generator = config.get("seed", 0), parts["generator"]
    torch.manual_seed(seed)
    dev = next(generator.parameters()).device
    return sample_quality(unit_samples(generator, dataset.test.shape[0]), dataset, seed=seed, device=dev,
                          progress=progress)


@torch.no_grad()
def save_figures(parts, dataset, config, run_dir) -> Path:
    """run_dir/samples.png: test images beside generator samples."""
    path = Path(run_dir) / "samples.png"
    show_images({"data": unit_images(dataset, "test")[:32], "samples": unit_samples(parts["generator"], 32)},
                dataset.image_shape, path=path)
    return path


def sample(parts, n: int, out_path, dataset, config, length=None) -> list[Path]:
    show_images({"samples": unit_samples(parts["generator"], n)}, dataset.image_shape, path=out_path)
    return [Path(out_path)]


GAN = Family("gan", DEFAULTS, load_data=load_images, build=build, train=train, metrics=quality,
             figures=save_figures, sample=sample, sampler="generator",
             last={k: k for k in ("d_loss", "g_loss", "d_real", "d_fake")})
