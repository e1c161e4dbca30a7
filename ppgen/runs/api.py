"""Runs: a directory holding ``config.json``, ``checkpoint.pt``, ``metrics.json`` and figures.

``train_run`` is what ``ppgen train`` does; ``load_run`` rebuilds the model and guide from a
run directory (weights loaded safely) for ``ppgen eval``, ``sample`` and reports. Each model
family has a small runner module registered in ``RUNNERS``. A Pyro family provides
``load_dataset``, ``build``, ``metrics``, ``save_figures`` and ``sample`` (and optionally
``training_split``, the data ``fit`` trains on when it is not the dataset's own train split,
e.g. augmented), and is trained by :func:`ppgen.infer.fit` here; a family with its own
training loop (GAN, restoration nets) provides ``train_run`` / ``load_run`` / ``eval_run`` itself, and these functions hand over.
"""
from __future__ import annotations

import importlib
import copy
from pathlib import Path

import torch

from ..guides import GUIDES, check_sites
from ..infer.fit import FitConfig
from ..infer import fit
from ..infer.checkpoint import load_checkpoint
from ..nn.device import resolve_device
from .files import read_config, read_json, start_run, write_json

#: model name -> runner module (imported on first use)
RUNNERS = {
    "vae": "ppgen.runs.vae",
    "sparse_vae": "ppgen.runs.vae",
    "vrnn": "ppgen.runs.vrnn",
    "conv_vae": "ppgen.runs.conv_vae",
    "gan": "ppgen.runs.gan",
    "vaegan": "ppgen.runs.vaegan",
    "deconv": "ppgen.runs.deconv",
}

FIT_KEYS = tuple(FitConfig.__dataclass_fields__)


def runner(model_name: str):
    if model_name not in RUNNERS:
        raise ValueError(f"unknown model {model_name!r}; choose one of: {', '.join(RUNNERS)}")
    return importlib.import_module(RUNNERS[model_name])


def train_run(config: dict, out, *, resume: bool = False, device: str = "auto", progress: bool = True,
              iwae_k: int = 1000) -> dict:
    """Train the model named in ``config`` on ``config["data"]``; write the run directory."""
    out = Path(out)
    run = runner(config["model"])
    if hasattr(run, "train_run"):
        return run.train_run(config, out, resume=resume, device=device, progress=progress, iwae_k=iwae_k)
    dataset = run.load_dataset(config["data"])
    torch.manual_seed(config.get("seed", 0))  # network initialisation is part of the seeded run
    model, guide = run.build(config, dataset)
    config = {**config, "prior": getattr(model.prior, "name", config.get("prior")),
              "guide": config.get("guide") or _guide_name(guide)}
    for key, value in getattr(run, "FIT_DEFAULTS", {}).items():  # the family's tuned settings
        if config.get(key) is None:
            config[key] = value
    train = run.training_split(config, dataset) if hasattr(run, "training_split") else dataset.train
    start_run(out, config, resume)
    fit_cfg = {k: config[k] for k in FIT_KEYS if config.get(k) is not None}
    hist = fit(model, guide, train, dataset.val, checkpoint=out / "checkpoint.pt", resume=resume,
               device=device, progress=progress, **fit_cfg)
    metrics = {
        **run.metrics(model, guide, _to(dataset, hist.device), k=iwae_k),
        "epochs": hist.epoch[-1] if hist.epoch else 0,
        "best_epoch": hist.best_epoch,
        "stopped_early": hist.stopped_early,
        "train_seconds": round(hist.train_seconds, 3),
        "device": hist.device,
        **{k: config.get(k) for k in ("model", "prior", "guide", "elbo", "data")},
    }
    write_json(out / "metrics.json", metrics)
    run.save_figures(model, guide, _to(dataset, hist.device), out)
    return metrics


def load_run(run_dir, device: str = "auto"):
    """(model, guide, dataset, config) of a finished or interrupted run, weights from its
    checkpoint (the best-validation weights when early stopping kept them)."""
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    run = runner(config["model"])
    if hasattr(run, "load_run"):
        return run.load_run(run_dir, config, device)
    dataset = run.load_dataset(config["data"])
    model, guide = run.build(config, dataset)
    state = load_checkpoint(run_dir / "checkpoint.pt")
    weights = state["best"] if state.get("best") else state
    dev = resolve_device(device)
    model.to(dev), guide.to(dev)
    # lazily built guide parameters must exist before their weights are loaded
    train = dataset.train if isinstance(dataset.train, tuple) else (dataset.train,)
    check_sites(model, guide, *(t[:2].to(dev) for t in train))
    model.load_state_dict(weights["model"]), guide.load_state_dict(weights["guide"])
    model.eval(), guide.eval()
    return model, guide, _to(dataset, str(dev)), config


def eval_run(run_dir, device: str = "auto", iwae_k: int = 1000) -> dict:
    """Recompute the run's metrics from its checkpoint and rewrite metrics.json."""
    config = read_config(run_dir)
    if hasattr(runner(config["model"]), "eval_run"):
        return runner(config["model"]).eval_run(run_dir, device=device, iwae_k=iwae_k)
    model, guide, dataset, config = load_run(run_dir, device)
    path = Path(run_dir) / "metrics.json"
    old = read_json(path) if path.exists() else {}
    metrics = {**old, **runner(config["model"]).metrics(model, guide, dataset, k=iwae_k), "device": str(resolve_device(device))}
    write_json(path, metrics)
    return metrics


def _guide_name(guide) -> str:
    return next((name for name, cls in GUIDES.items() if type(guide) is cls), type(guide).__name__)


def _to(dataset, device):
    """A shallow copy of ``dataset`` with its splits on ``device``."""
    moved = copy.copy(dataset)
    for split in ("train", "val", "test"):
        value = getattr(dataset, split)
        setattr(moved, split, tuple(t.to(device) for t in value) if isinstance(value, tuple) else value.to(device))
    return moved


__all__ = ["RUNNERS", "train_run", "load_run", "eval_run", "runner"]
