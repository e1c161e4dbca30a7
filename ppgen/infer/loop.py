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

Under torchrun (:mod:`.distributed`) the same loop trains data-parallel: each process takes
its share of every global minibatch (:class:`~ppgen.infer.batches.Shard`), the family's step
averages gradients through DDP (:func:`~ppgen.infer.distributed.data_parallel`), ``apply``
scales each process's loss by its share of the global batch, so the averaged gradient is the
one-process gradient of the global batch even when a batch splits unevenly, random draws are
seeded by ``seed + rank``, the records are averaged over all processes' rows, a non-finite
loss on any process stops every process, and rank 0 alone shows the progress bar and writes
the checkpoint (with every rank's RNG state).
"""
from __future__ import annotations

import math
import sys
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
from . import distributed
from .batches import Batches, InMemory, Shard, Streamed
from .precision import autocast, check_precision, outside_autocast
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

    Under torchrun ``update`` sees this process's share of each global batch and makes its
    modules' gradients averaged over the processes (:func:`~ppgen.infer.distributed.data_parallel`
    or :func:`~ppgen.infer.distributed.synced` around the computation of each loss; the parts
    stay the unwrapped modules), and ``score`` must return the same number in every process
    (for example :func:`~ppgen.infer.distributed.mean_over_ranks` of each process's share of
    the validation data), so that early stopping decides alike everywhere.
    """

    update: Callable[[tuple, int, Callable], dict]
    parts: dict
    end_epoch: Callable[[], dict] | None = None
    score: Callable[[], float] | None = None
    score_name: str = "val_score"
    keep_best: tuple = ()
    per_step: tuple = ()


def apply_update(loss: torch.Tensor, optimizer: torch.optim.Optimizer, what: str = "loss", *,
                 clip_norm: float | None = None, where: tuple | None = None, scale: float = 1.0) -> float:
    """The one optimiser update: refuse a non-finite ``loss`` before touching any gradient or
    weight (:class:`NonFiniteLossError`; with several processes, when any process has one,
    on every process), then zero the gradients, back-propagate ``scale * loss`` (a process's
    share of a global batch, see the module docstring), clip the optimiser's parameters to
    ``clip_norm`` (when set) and step. ``where`` = (epoch index, step index, checkpoint path
    or None) names the place in the error. Returns the loss as a float (what the step logs):
    reading it is the update's one host-device sync, and the finiteness check reuses it.
    Backward and step run outside autocast (:mod:`.precision`)."""
    value = loss.item()
    if distributed.active():  # every process stops, or none: the others would wait for it in the backward pass
        failed = distributed.failed_ranks(not math.isfinite(value))
        if failed:
            raise NonFiniteLossError(f"non-finite {what} on rank {', '.join(map(str, failed))} of "
                                     f"{distributed.world()} processes" + (_where(*where) if where else ""))
    elif not math.isfinite(value):
        raise NonFiniteLossError(f"non-finite {what} ({value})" + (_where(*where) if where else ""))
    with outside_autocast():
        optimizer.zero_grad(set_to_none=True)
        (loss if scale == 1.0 else loss * scale).backward()
        if clip_norm:
            torch.nn.utils.clip_grad_norm_([p for group in optimizer.param_groups for p in group["params"]], clip_norm)
        optimizer.step()
    return value


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
    ``batch_size``, ``seed`` and, where present, ``patience``, ``clip_norm`` and ``precision``
    ("fp32" or "bf16": each ``update`` runs under :func:`ppgen.infer.precision.autocast`; the
    validation score runs in float32).
    ``make_step(device)`` builds the family's :class:`Step` after seeding, so network
    initialisation is part of the seeded run.

    ``history``: ``epoch``, ``seconds`` and the step's records per epoch, ``best_epoch``,
    ``stopped_early``. With ``checkpoint`` the state is written atomically after every epoch;
    ``resume=True`` continues from it exactly (same RNG streams) up to ``epochs`` in total.
    """
    if resume and checkpoint is None:
        raise ValueError("resume=True needs a checkpoint path")
    dev = distributed.local_device(resolve_device(device))
    precision = config.get("precision", "fp32")
    check_precision(precision, dev)
    world, rank = distributed.setup(dev), distributed.rank()
    if isinstance(data, Batches):
        if world > 1 and not (isinstance(data, (InMemory, Streamed)) and data.shard.world == world):
            raise ValueError(f"under torchrun ({world} processes) the loop needs a source sharded over the processes "
                             f"(InMemory or Streamed with a Shard of world {world}); got {type(data).__name__}")
        batches = data
    else:
        batches = InMemory(model_args(data), config["batch_size"], dev, Shard(rank, world, config["seed"]))
    seed_all(config["seed"])  # the same initial weights in every process
    step = make_step(dev)
    if world > 1:  # each process its own random draws (z ~ q, noise, dropout)
        seed_all(config["seed"] + rank)
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
        _restore_rng(state, config["seed"], world, rank)

    epochs = config["epochs"]
    patience, best_key = config.get("patience"), "best_" + step.score_name
    n, steps, batch_size = batches.n, batches.steps, config["batch_size"]
    modules = [p for p in step.parts.values() if isinstance(p, nn.Module)]
    bar = tqdm(range(start, epochs), desc=desc, disable=not progress or rank > 0, initial=start, total=epochs)
    with pyro.validation_enabled(False):  # inputs are checked once before training; per-step checks only cost time
        for epoch in bar:
            t0 = time.perf_counter()
            for module in modules:
                module.train()
            sums: dict = {}
            per_step: dict = {}
            seen = 0
            for i, batch in enumerate(batches.epoch(epoch)):
                size = batch[0].shape[0]
                seen += size
                # this process's share of the global batch: DDP averages the processes' gradients, so
                # world * size / rows makes the average the gradient of the global batch's mean loss
                scale = world * size / min(batch_size, n - i * batch_size) if world > 1 else 1.0
                apply = partial(apply_update, clip_norm=config.get("clip_norm"), where=(epoch, i, checkpoint),
                                scale=scale)
                with autocast(dev, precision):
                    values = step.update(batch, epoch * steps + i, apply)
                for key, value in values.items():
                    if key in step.per_step:
                        per_step.setdefault(key, []).append((value, size))
                    else:
                        sums[key] = sums.get(key, 0.0) + value * size
            records = _epoch_means(sums, n, seen)
            for key, values in _step_means(per_step).items():
                history.setdefault("step_" + key, []).extend(values)
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
            rngs = distributed.gather_objects(rng_state()) if world > 1 else None
            if checkpoint and rank == 0:
                save_atomic(checkpoint, {
                    **{name: part.state_dict() for name, part in step.parts.items()},
                    "config": config, "history": history, "epoch": epoch + 1, "bad_epochs": bad_epochs,
                    "best": best, "rng": rngs[0] if rngs else rng_state(), "finished": stop,
                    **({"world": world, "rng_ranks": rngs} if rngs else {}),
                })
            if stop:
                break
    bar.close()
    if best is not None:  # early stopping returns the best validation weights
        for name, weights in best.items():
            step.parts[name].load_state_dict(weights)
    return step, history


def _epoch_means(sums: dict, n: int, seen: int) -> dict:
    """Per-epoch means of the records over the training rows: with several processes, over
    every process's rows (all-reduced sums; the rows actually seen, as a final batch may be
    dropped)."""
    if not distributed.active():
        return {key: total / n for key, total in sums.items()}
    keys = sorted(sums)
    totals = distributed.all_reduce_sum([sums[k] for k in keys] + [seen])
    return {key: total / totals[-1] for key, total in zip(keys, totals)} if keys else {}


def _step_means(per_step: dict) -> dict:
    """Per-step records (``{name: [(value, rows), ...]}``): each step's value; with several
    processes the row-weighted mean over the processes (one all-reduce per epoch)."""
    if not distributed.active():
        return {key: [value for value, _ in pairs] for key, pairs in per_step.items()}
    out = {}
    for key in sorted(per_step):
        flat = distributed.all_reduce_sum([v for value, rows in per_step[key] for v in (value * rows, rows)])
        out[key] = [flat[j] / flat[j + 1] for j in range(0, len(flat), 2)]
    return out


def _restore_rng(state: dict, seed: int, world: int, rank: int) -> None:
    """Each process's random streams from a checkpoint: exactly where they were when the run
    was saved by as many processes; otherwise rank 0's streams for one process, or fresh
    streams seeded by ``seed + rank + 7919 * epoch`` (the run continues, its draws differ from
    an uninterrupted run's)."""
    saved = state.get("world", 1)
    if saved == world:
        set_rng_state(state["rng_ranks"][rank] if world > 1 else state["rng"])
        return
    if rank == 0:
        print(f"note: this run was saved by {saved} process(es) and resumes with {world}: training continues from "
              f"epoch {state['epoch']} with the same weights and optimiser state, but not with the same random "
              "draws or batches as an uninterrupted run", file=sys.stderr)
    if world == 1:
        set_rng_state(state["rng"])
    else:
        seed_all(seed + rank + 7919 * state["epoch"])


def _copy(state_dict: dict) -> dict:
    return {k: v.detach().clone() for k, v in state_dict.items()}


__all__ = ["Step", "train", "apply_update", "seed_all", "NonFiniteLossError"]
