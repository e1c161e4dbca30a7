"""The one training loop of every family: Pyro pairs (:func:`ppgen.infer.fit`), the GAN, the
VAE-GAN and the restoration nets.

A family supplies a :class:`Step`: the parts to checkpoint and ``update(batch, t, apply)``,
one minibatch. ``update`` computes one loss per optimiser, in order, and hands each to
``apply(loss, optimizer, what)`` (a GAN: the discriminator's, then the generator's, computed
against the updated discriminator), then returns its floats to record. The loop owns the
rest: the device, seeding, shuffled minibatches on the data's device, the non-finite stop,
an atomic checkpoint each epoch (every part's state, the RNG streams, the history), exact
resume up to ``epochs``, a validation score with early stopping and best-weight restore, the
progress bar and the history.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import pyro
import torch
from torch import nn
from tqdm.auto import tqdm

from ..data.base import model_args
from ..nn.device import resolve_device
from .batches import Batches, InMemory
from .checkpoint import load_checkpoint, rng_state, save_atomic, set_rng_state
from .resume import check_epochs_left, check_settings


class NonFiniteLossError(RuntimeError):
    """A NaN or infinite loss, raised before the update it would drive: the last checkpoint
    written (at the end of the previous epoch) is the last good state."""


@dataclass(frozen=True)
class Step:
    """One family's part of the loop.

    ``update(batch, t, apply) -> {name: float}``: one minibatch (a tuple of tensors, rows of the
    data), ``t`` the global step index from 0 (for schedules such as KL annealing); it calls
    ``apply(loss, optimizer, what)`` once per optimiser, in order. The loop records the
    per-epoch mean (weighted by batch size) of each returned value, or, for names in
    ``per_step``, every value as ``step_<name>``.

    ``parts``: name -> module, optimiser, scheduler or any object with ``state_dict()`` and
    ``load_state_dict()`` (a pair's param-store values, say); each state is saved under its
    name in the checkpoint and restored on resume. Modules are put in train mode each epoch.
    ``end_epoch() -> {name: float}``: after the epoch's steps (stepping a scheduler, say);
    its values are recorded per epoch. ``score() -> float``: a validation score, higher is
    better, recorded as ``score_name`` with ``best_<score_name>`` and ``best_epoch``; with a
    ``patience`` setting, the weights of the ``keep_best`` parts at the best score are kept
    and restored at the end.
    """

    update: Callable[[tuple, int, Callable], dict]
    parts: dict
    end_epoch: Callable[[], dict] | None = None
    score: Callable[[], float] | None = None
    score_name: str = "val_score"
    keep_best: tuple = ()
    per_step: tuple = ()


def apply_update(loss: torch.Tensor, optimizer: torch.optim.Optimizer, what: str = "loss", *,
                 clip_norm: float | None = None, where: tuple | None = None) -> None:
    """The one optimiser update: refuse a non-finite ``loss`` before touching any gradient or
    weight (:class:`NonFiniteLossError`), then zero the gradients, back-propagate, clip the
    optimiser's parameters to ``clip_norm`` (when set) and step. ``where`` = (epoch index,
    step index, checkpoint path or None) names the place in the error."""
    if not torch.isfinite(loss):
        raise NonFiniteLossError(f"non-finite {what} ({loss.item()})" + (_where(*where) if where else ""))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip_norm:
        torch.nn.utils.clip_grad_norm_([p for group in optimizer.param_groups for p in group["params"]], clip_norm)
    optimizer.step()


def _where(epoch: int, step: int, checkpoint) -> str:
    if not checkpoint:
        saved = "no checkpoint was requested"
    elif epoch:
        saved = f"the last good checkpoint ({checkpoint}, epoch {epoch}) is intact"
    else:
        saved = f"nothing was written to {checkpoint}"
    return f" at epoch {epoch + 1}, step {step + 1}; training stopped before the update; {saved}"


def seed_all(seed: int) -> None:
    """Seed torch (CPU and CUDA), Python's and NumPy's generators."""
    pyro.set_rng_seed(seed)


def train(make_step: Callable[[torch.device], Step], data, config: dict, *, device: str | torch.device = "auto",
          checkpoint: str | Path | None = None, resume: bool = False, progress: bool = True,
          desc: str = "train") -> tuple[Step, dict]:
    """Train by minibatches; return ``(step, history)``.

    ``data``: a tensor ``[N, ...]`` or a tuple of tensors sharing the first dimension, moved
    to ``device`` ("auto": CUDA when available) and reshuffled every epoch
    (:class:`~ppgen.infer.batches.InMemory`), or any :class:`~ppgen.infer.batches.Batches`
    source (data streamed from disk, say).
    ``config``: the settings that shape the run, saved in the checkpoint and compared on
    resume (:mod:`ppgen.infer.resume`); the loop reads ``epochs``,
    ``batch_size``, ``seed`` and, where present, ``patience`` and ``clip_norm``.
    ``make_step(device)`` builds the family's :class:`Step` after seeding, so network
    initialisation is part of the seeded run.

    ``history``: ``epoch``, ``seconds`` and the step's records per epoch, ``best_epoch``,
    ``stopped_early``. With ``checkpoint`` the state is written atomically after every epoch;
    ``resume=True`` continues from it exactly (same RNG streams) up to ``epochs`` in total.
    """
    if resume and checkpoint is None:
        raise ValueError("resume=True needs a checkpoint path")
    dev = resolve_device(device)
    batches = data if isinstance(data, Batches) else InMemory(model_args(data), config["batch_size"], dev)
    seed_all(config["seed"])
    step = make_step(dev)
    history = {"epoch": [], "seconds": [], "best_epoch": 0, "stopped_early": False}
    best, bad_epochs, start = None, 0, 0
    if resume:
        state = load_checkpoint(checkpoint)
        check_settings(state["config"], config)
        check_epochs_left(state, config["epochs"])
        for name, part in step.parts.items():
            part.load_state_dict(state[name])
        history, start = state["history"], state["epoch"]
        best, bad_epochs = state.get("best"), state.get("bad_epochs", 0)
        set_rng_state(state["rng"])

    epochs = config["epochs"]
    patience, best_key = config.get("patience"), "best_" + step.score_name
    n, steps = batches.n, batches.steps
    modules = [p for p in step.parts.values() if isinstance(p, nn.Module)]
    bar = tqdm(range(start, epochs), desc=desc, disable=not progress, initial=start, total=epochs)
    with pyro.validation_enabled(False):  # inputs are checked once before training; per-step checks only cost time
        for epoch in bar:
            t0 = time.perf_counter()
            for module in modules:
                module.train()
            sums: dict = {}
            for i, batch in enumerate(batches.epoch(epoch)):
                apply = partial(apply_update, clip_norm=config.get("clip_norm"), where=(epoch, i, checkpoint))
                size = batch[0].shape[0]
                for key, value in step.update(batch, epoch * steps + i, apply).items():
                    if key in step.per_step:
                        history.setdefault("step_" + key, []).append(value)
                    else:
                        sums[key] = sums.get(key, 0.0) + value * size
            records = {key: total / n for key, total in sums.items()}
            records.update(step.end_epoch() if step.end_epoch else {})
            if step.score:
                records[step.score_name] = score = step.score()
                if score > history.get(best_key, -math.inf):
                    history[best_key], history["best_epoch"], bad_epochs = score, epoch + 1, 0
                    if patience is not None and step.keep_best:
                        best = {k: _copy(step.parts[k].state_dict()) for k in step.keep_best}
                else:
                    bad_epochs += 1
            history["epoch"].append(epoch + 1)
            for key, value in records.items():
                history.setdefault(key, []).append(value)
            history["seconds"].append(time.perf_counter() - t0)
            bar.set_postfix({k: f"{v:.4g}" for k, v in records.items()})
            stop = patience is not None and bad_epochs > patience
            history["stopped_early"] = stop  # before the save, so that the checkpoint's history records it
            if checkpoint:
                save_atomic(checkpoint, {
                    **{name: part.state_dict() for name, part in step.parts.items()},
                    "config": config, "history": history, "epoch": epoch + 1, "bad_epochs": bad_epochs,
                    "best": best, "rng": rng_state(), "finished": stop,
                })
            if stop:
                break
    bar.close()
    if best is not None:  # early stopping returns the best validation weights
        for name, weights in best.items():
            step.parts[name].load_state_dict(weights)
    return step, history


def _copy(state_dict: dict) -> dict:
    return {k: v.detach().clone() for k, v in state_dict.items()}


__all__ = ["Step", "train", "apply_update", "seed_all", "NonFiniteLossError"]
