"""The VAE family (vae, sparse_vae) as a run: build from a config, evaluate, draw figures."""
from __future__ import annotations

from pathlib import Path

import torch

from .. import data as data_mod
from ..evaluate import evaluate
from ..guides import GUIDES
from ..models import MODELS, SparseVAE
from ..figures.images import show_images
from ..priors import PRIORS

#: fit settings tuned on digits (benchmarks/digits_vae.py, BENCHMARKS.md); a CLI flag overrides them
FIT_DEFAULTS = {"epochs": 1000, "patience": 100, "weight_decay": 0.03}

DEFAULTS = {"prior": None, "guide": None, "z_dim": 16, "hidden": 256, "likelihood": None}


def load_dataset(spec: str):
    return data_mod.load(spec)


def build(config: dict, dataset):
    """(model, guide) from a run config: registry names plus sizes."""
    cfg = {**DEFAULTS, **{k: v for k, v in config.items() if v is not None}}
    model_cls = _pick(MODELS, config["model"], "model")
    kwargs = {"hidden": cfg["hidden"]}
    if cfg["prior"] is not None:
        kwargs["prior"] = _pick(PRIORS, cfg["prior"], "prior")(cfg["z_dim"])
    if cfg["likelihood"] is not None:
        kwargs["likelihood"] = cfg["likelihood"]
    model = model_cls.for_data(dataset, cfg["z_dim"], **kwargs)
    guide_name = cfg["guide"] or default_guide(model)
    guide = _pick(GUIDES, guide_name, "guide").for_model(model, hidden=cfg["hidden"])
    return model, guide


def default_guide(model) -> str:
    return "spike_and_slab" if model.prior.name == "spike_and_slab" and isinstance(model, SparseVAE) else "diag_normal"


def fit_data(dataset):
    return dataset.train, dataset.val


def metrics(model, guide, dataset, k: int = 1000) -> dict:
    return evaluate(model, guide, dataset.test, k=k, sparsity=isinstance(model, SparseVAE))


@torch.no_grad()
def save_figures(model, guide, dataset, run_dir) -> Path:
    """run_dir/samples.png: test images, their reconstructions (mean of p(x|z), z ~ q(z|x))
    and samples from the model."""
    path = Path(run_dir) / "samples.png"
    x = dataset.test[:32].to(next(model.parameters()).device)
    z = guide.posterior(x).rsample() if hasattr(guide, "posterior") else None
    panels = {"data": x}
    if z is not None:
        panels["reconstructions"] = model.likelihood.mean(model.decoder(z))
    panels["samples"] = model.sample(32)
    show_images(panels, dataset.image_shape or (1, 1, dataset.x_dim), path=path)
    return path


def sample(model, n: int, out_path, *, dataset, length=None) -> Path:
    show_images({"samples": model.sample(n)}, dataset.image_shape or (1, 1, dataset.x_dim), path=out_path)
    return Path(out_path)


def _pick(registry: dict, name: str, what: str):
    if name not in registry:
        raise ValueError(f"unknown {what} {name!r}; choose one of: {', '.join(registry)}")
    return registry[name]
