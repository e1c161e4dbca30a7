"""The VAE-GAN as a run (``ppgen train vaegan``): the conv VAE's model/guide pair built by
:mod:`ppgen.runs.conv_vae`, trained with its discriminator by
:func:`ppgen.models.vaegan.train_vaegan`; reported both as a likelihood model (test ELBO,
IWAE log p(x)) and by sample quality."""
from __future__ import annotations

from pathlib import Path

import torch

from ..companions.sample_quality import sample_quality, unit_samples
from ..nn.device import resolve_device
from ..companions.vaegan import train_vaegan
from .api import _guide_name, _to
from .conv_vae import build, load_dataset
from .conv_vae import metrics as likelihood_metrics
from .files import family_config, load_state, start_run, update_metrics
from .vae import sample, save_figures  # noqa: F401  (the runner interface)

DEFAULTS = {"prior": None, "guide": None, "z_dim": 16, "hidden": 256, "width": 32, "likelihood": None,
            "spectral_norm": False, "epochs": 20, "batch_size": 64, "lr": 1e-3, "elbo": "trace",
            "num_particles": 1, "beta": 1.0, "adversarial_weight": 10.0, "feature_weight": 0.0,
            "gradient_penalty": 0.0, "seed": 0}
TRAIN_KEYS = ("epochs", "batch_size", "lr", "elbo", "num_particles", "beta", "adversarial_weight", "feature_weight",
              "gradient_penalty", "seed")


def train_run(config: dict, out, *, resume: bool = False, device: str = "auto", progress: bool = True,
              iwae_k: int = 1000) -> dict:
    """Train, then write metrics.json (likelihood metrics with ``iwae_k`` importance draws,
    MIG where the data have factors, sample quality, final losses, time) and samples.png."""
    cfg = family_config(config, DEFAULTS)
    dataset = load_dataset(cfg["data"])
    torch.manual_seed(cfg["seed"])  # network initialisation is part of the seeded run
    model, guide = build(cfg, dataset)
    cfg["prior"], cfg["guide"] = model.prior.name, cfg["guide"] or _guide_name(guide)
    out = start_run(out, cfg, resume)
    result = train_vaegan(model, guide, dataset.train, dataset.val, device=device, checkpoint=out / "checkpoint.pt",
                          resume=resume, progress=progress, **{k: cfg[k] for k in TRAIN_KEYS})
    hist = result["history"]
    dev = resolve_device(device)
    metrics = {**evaluate_run(model, guide, _to(dataset, str(dev)), iwae_k, cfg["seed"]),
               **{k: hist[k][-1] for k in ("neg_elbo", "adversarial", "feature", "d_loss", "d_real", "d_fake")},
               "epochs": hist["epoch"][-1], "train_seconds": round(sum(hist["seconds"]), 3), "device": str(dev),
               **{k: cfg[k] for k in ("model", "prior", "guide", "elbo", "data", "adversarial_weight",
                                      "feature_weight")}}
    update_metrics(out, metrics)
    save_figures(model, guide, _to(dataset, str(dev)), out)
    return metrics


def evaluate_run(model, guide, dataset, iwae_k: int, seed: int = 0) -> dict:
    """Likelihood metrics (as the conv VAE's) and the sample quality of ``len(test)`` means of
    p(x|z), z ~ p(z) (seeded)."""
    out = likelihood_metrics(model, guide, dataset, k=iwae_k)
    torch.manual_seed(seed)
    samples = unit_samples(model.eval(), dataset.test.shape[0])
    return {**out, **sample_quality(samples, dataset, seed=seed, device=samples.device)}


def load_run(run_dir, config: dict, device: str = "auto"):
    """(model with its discriminator, guide, dataset on the device, config), in eval mode."""
    cfg = family_config(config, DEFAULTS)
    dataset = load_dataset(cfg["data"])
    model, guide = build(cfg, dataset)
    dev = resolve_device(device)
    model.to(dev), guide.to(dev)
    from ..guides import check_sites

    check_sites(model, guide, dataset.train[:2].to(dev))  # lazily built guide parameters exist before loading
    state = load_state(run_dir)
    model.load_state_dict(state["model"]), guide.load_state_dict(state["guide"])
    return model.eval(), guide.eval(), _to(dataset, str(dev)), config


def eval_run(run_dir, *, device: str = "auto", iwae_k: int = 1000) -> dict:
    """Recompute the likelihood and quality metrics from the checkpoint; merge into metrics.json."""
    from .files import read_json

    model, guide, dataset, config = load_run(run_dir, read_json(Path(run_dir) / "config.json"), device)
    return update_metrics(run_dir, {**evaluate_run(model, guide, dataset, iwae_k, config.get("seed", 0)),
                                    "device": str(resolve_device(device))})
