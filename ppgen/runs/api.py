"""Runs: a directory holding ``config.json``, ``checkpoint.pt``, ``metrics.json`` and figures.

``train_run`` is what ``ppgen train`` does; ``open_run`` rebuilds a run's parts from its
directory (weights loaded safely) for ``ppgen eval``, ``sample``, ``continue`` and reports.
One code path for every family: each is a :class:`~ppgen.runs.family.Family` in
:data:`~ppgen.runs.families.FAMILIES`, trained through the one loop.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from .. import data as data_mod
from ..guides import check_sites
from ..infer.checkpoint import load_checkpoint
from ..infer.loop import seed_all
from ..nn.device import resolve_device
from .families import family
from .family import Family, guide_name, on_device
from .files import check_resume, check_run_folder, check_writable, read_config, read_json, write_json

#: config settings that metrics.json repeats, where the family has them
REPORTED = ("model", "prior", "guide", "elbo", "data", "task", "adversarial_weight", "feature_weight")


class Run(NamedTuple):
    """A run directory opened: its family, trained parts (eval mode), dataset and config."""

    family: Family
    parts: dict
    dataset: object
    config: dict


def train_run(config: dict, out, *, resume: bool = False, device: str = "auto", progress: bool = True,
              iwae_k: int | None = None, eval_seed: int = 0) -> dict:
    """Train the model named in ``config`` on ``config["data"]``; write the run directory
    (config.json, checkpoint.pt, metrics.json, figures) and return the metrics.

    Everything that can be checked is checked before any training: the settings (options the
    family does not take are refused), the output folder (new, empty or this run with
    ``resume``; writable), and on resume the saved settings and the epochs left. ``iwae_k``:
    importance draws of the final evaluation (default: the family's ``train_iwae_k``)."""
    fam = family(config["model"])
    config = fam.settings(config)
    config["data"] = data_mod.resolve_spec(config["data"])
    out = check_run_folder(out, resume)
    dataset = fam.load_data(config["data"])
    torch.manual_seed(config["seed"])  # network initialisation is part of the seeded run
    parts = fam.build(config, dataset)
    if "prior" in config:  # the names of what was built, defaults included
        config["prior"] = parts["model"].prior.name
    if "guide" in config:
        config["guide"] = config["guide"] or guide_name(parts["guide"])
    if "likelihood" in config:
        config["likelihood"] = parts["model"].likelihood.name
    if resume:
        check_resume(out, config)
    write_json(out / "config.json", config)
    history = fam.train(parts, dataset, config, checkpoint=out / "checkpoint.pt", resume=resume, device=device,
                        progress=progress)
    dev = resolve_device(device)
    dataset = on_device(dataset, dev)
    _eval_mode(parts)
    metrics = {
        **evaluate_run(fam, parts, dataset, config, iwae_k or fam.train_iwae_k, eval_seed, progress),
        **{name: history[key][-1] for name, key in fam.last.items()},
        "epochs": history["epoch"][-1] if history["epoch"] else 0,
        "best_epoch": history.get("best_epoch", 0),
        "stopped_early": history.get("stopped_early", False),
        "train_seconds": round(sum(history["seconds"]), 3),
        "device": str(dev),
        **{k: config[k] for k in REPORTED if k in config},
    }
    write_json(out / "metrics.json", metrics)
    fam.figures(parts, dataset, config, out)
    return metrics


def evaluate_run(fam: Family, parts: dict, dataset, config: dict, k: int, seed: int = 0,
                 progress: bool = False) -> dict:
    """The family's held-out metrics, seeded (the same command gives the same numbers; the
    seed is recorded as ``eval_seed``), timed (``eval_seconds``) and, with ``progress``, with
    a progress bar."""
    seed_all(seed)
    start = time.perf_counter()
    metrics = fam.metrics(parts, dataset, config, k, progress=progress)
    return {**metrics, "eval_seed": seed, "eval_seconds": round(time.perf_counter() - start, 3)}


def open_run(run_dir, device: str = "auto") -> Run:
    """The run in ``run_dir`` rebuilt: weights from its checkpoint (the best-validation
    weights where early stopping kept them), in eval mode, with the dataset on ``device``."""
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    fam = family(config["model"])
    dataset = fam.load_data(config["data"])
    parts = fam.build(config, dataset)
    dev = resolve_device(device)
    for part in parts.values():
        part.to(dev)
    if "guide" in parts:  # a Pyro pair's lazily built guide parameters must exist before loading
        train = dataset.train if isinstance(dataset.train, tuple) else (dataset.train,)
        check_sites(parts["model"], parts["guide"], *(t[:2].to(dev) for t in train))
    state = load_checkpoint(run_dir / "checkpoint.pt")
    weights = state["best"] if state.get("best") else state
    for name, part in parts.items():
        part.load_state_dict(weights[name])
    _eval_mode(parts)
    return Run(fam, parts, on_device(dataset, dev), config)


def load_run(run_dir, device: str = "auto"):
    """(model, guide, dataset, config) of a finished or interrupted run (see :func:`open_run`);
    the model is the part that draws samples (the GAN's generator), the guide None where the
    family has none."""
    run = open_run(run_dir, device)
    return run.parts[run.family.sampler], run.parts.get("guide"), run.dataset, run.config


def eval_run(run_dir, device: str = "auto", iwae_k: int = 1000, seed: int = 0, progress: bool = False) -> dict:
    """Recompute the run's metrics from its checkpoint (seeded by ``seed``) and merge them
    into metrics.json."""
    run = open_run(run_dir, device)
    path = check_writable(run_dir) / "metrics.json"  # before the computing
    old = read_json(path) if path.exists() else {}
    metrics = {**old, **evaluate_run(run.family, run.parts, run.dataset, run.config, iwae_k, seed, progress),
               "device": str(resolve_device(device))}
    write_json(path, metrics)
    return metrics


def _eval_mode(parts: dict) -> None:
    for part in parts.values():
        if isinstance(part, nn.Module):
            part.eval()


__all__ = ["Run", "train_run", "evaluate_run", "open_run", "load_run", "eval_run"]
