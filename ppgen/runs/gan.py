"""The DCGAN companion as a run (``ppgen train gan``): trained by :func:`ppgen.companions.gan.train_gan`
on the unit-scale images of a dataset, judged by sample quality (there is no likelihood)."""
from __future__ import annotations

from pathlib import Path

import torch

from .. import data as data_mod
from ..companions.sample_quality import sample_quality, unit_images, unit_samples
from ..nn.device import resolve_device
from ..nn.dcgan import Discriminator, Generator
from ..companions.gan import train_gan
from ..nn.conv import conv_channels
from ..figures.images import show_images
from .files import family_config, load_state, start_run, update_metrics

#: spectral norm and lr 1e-3: on sprites, 10 epochs without spectral norm (lr 2e-4 or 1e-3) ended
#: with blank images, and lr 2e-4 with it collapsed to few modes (BENCHMARKS.md, "Sample quality")
DEFAULTS = {"z_dim": 32, "width": 32, "epochs": 20, "batch_size": 64, "lr": 1e-3, "spectral_norm": True,
            "gradient_penalty": 0.0, "seed": 0}


def build(config: dict, image_shape) -> tuple[Generator, Discriminator]:
    """(generator, discriminator) as :func:`ppgen.companions.gan.train_gan` builds them (DCGAN widths
    from ``width``), seeded with the config's seed."""
    torch.manual_seed(config["seed"])
    widths = conv_channels(config["width"])
    return (Generator(config["z_dim"], image_shape, widths[::-1]),
            Discriminator(image_shape, widths, spectral_norm=config["spectral_norm"]))


def train_run(config: dict, out, *, resume: bool = False, device: str = "auto", progress: bool = True,
              iwae_k: int = 1000) -> dict:
    """Train, then write metrics.json (quality of ``len(test)`` samples against the test
    split, final losses, time) and samples.png. ``iwae_k`` is unused: a GAN has no likelihood."""
    cfg = family_config(config, DEFAULTS)
    dataset = data_mod.load(cfg["data"])
    train = unit_images(dataset, "train")
    out = start_run(out, cfg, resume)
    generator, discriminator = build(cfg, dataset.image_shape)
    result = train_gan(train, dataset.image_shape, z_dim=cfg["z_dim"], width=cfg["width"], epochs=cfg["epochs"],
                       batch_size=cfg["batch_size"], lr=cfg["lr"], spectral_norm=cfg["spectral_norm"],
                       gradient_penalty=cfg["gradient_penalty"], generator=generator, discriminator=discriminator,
                       device=device, seed=cfg["seed"], checkpoint=out / "checkpoint.pt", resume=resume,
                       progress=progress)
    hist = result["history"]
    generator = result["generator"].eval()
    metrics = {**quality(generator, dataset, cfg["seed"]),
               **{k: hist[k][-1] for k in ("d_loss", "g_loss", "d_real", "d_fake")},
               "epochs": hist["epoch"][-1], "train_seconds": round(sum(hist["seconds"]), 3),
               "device": str(resolve_device(device)), "model": "gan", "data": cfg["data"]}
    update_metrics(out, metrics)
    save_figures(generator, dataset, out)
    return metrics


def quality(generator: Generator, dataset, seed: int = 0) -> dict:
    """Sample quality of ``len(test)`` generator samples (seeded), on the generator's device."""
    torch.manual_seed(seed)
    dev = next(generator.parameters()).device
    return sample_quality(unit_samples(generator, dataset.test.shape[0]), dataset, seed=seed, device=dev)


def load_run(run_dir, config: dict, device: str = "auto"):
    """(generator in eval mode, None, dataset, config): a GAN has no guide."""
    cfg = family_config(config, DEFAULTS)
    dataset = data_mod.load(cfg["data"])
    generator, discriminator = build(cfg, dataset.image_shape)
    state = load_state(run_dir)
    generator.load_state_dict(state["generator"])
    return generator.to(resolve_device(device)).eval(), None, dataset, config


def eval_run(run_dir, *, device: str = "auto", iwae_k: int = 1000) -> dict:
    """Recompute the quality metrics from the checkpoint and merge them into metrics.json."""
    from .files import read_json

    config = read_json(Path(run_dir) / "config.json")
    generator, _, dataset, config = load_run(run_dir, config, device)
    return update_metrics(run_dir, {**quality(generator, dataset, config.get("seed", 0)),
                                    "device": str(resolve_device(device))})


@torch.no_grad()
def save_figures(generator: Generator, dataset, run_dir) -> Path:
    """run_dir/samples.png: test images beside generator samples."""
    path = Path(run_dir) / "samples.png"
    show_images({"data": unit_images(dataset, "test")[:32], "samples": unit_samples(generator, 32)},
                dataset.image_shape, path=path)
    return path


def sample(model: Generator, n: int, out_path, dataset, length=None) -> Path:
    show_images({"samples": unit_samples(model, n)}, dataset.image_shape, path=out_path)
    return Path(out_path)
