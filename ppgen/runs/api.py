"""Runs: a directory holding ``config.json``, ``checkpoint.pt``, ``metrics.json`` and figures.

``train_run`` is what ``ppgen train`` does; ``open_run`` rebuilds a run's parts from its
directory (weights loaded safely) for ``ppgen eval``, ``sample``, ``continue`` and reports.
One code path for every family: each is a :class:`~ppgen.runs.family.Family` in
:data:`~ppgen.runs.families.FAMILIES`, trained through the one loop.

Under torchrun (``torchrun --nproc-per-node=N -m ppgen train ...``) every process runs
``train_run``: all of them check the folder and train (data-parallel, :mod:`ppgen.infer.distributed`),
evaluate their share of the test set (:func:`evaluate_run`), and rank 0 alone writes
config.json, the checkpoint, metrics.json and the figures.
"""
from __future__ import annotations

import copy
import sys
import time
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from .. import data as data_mod
from ..guides import check_sites
from ..infer import distributed
from ..infer.checkpoint import load_checkpoint
from ..infer.loop import seed_all
from ..infer.resume import RunFinishedError, check_epochs_left, check_settings
from ..nn.device import resolve_device
from .families import family
from .family import Family, guide_name, on_device
from .files import check_resume, check_run_folder, check_writable, read_config, read_json, write_json
from .lock import hold

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
    ``resume``; writable), and on resume the saved settings and the epochs left. The folder
    is locked (:mod:`.lock`) while the run is written: a second process that trains or
    resumes into it is refused at once. ``iwae_k``: importance draws of the final evaluation
    (default: the family's ``train_iwae_k``)."""
    fam = family(config["model"])
    config = fam.settings(config)
    config["data"] = data_mod.resolve_spec(config["data"])
    dev = distributed.local_device(resolve_device(device))
    distributed.setup(dev)  # under torchrun: join the other processes (nothing happens in one process)
    out = check_run_folder(out, resume)
    with hold(out):  # one writer per run folder; taken before anything is written into it
        check_run_folder(out, resume)  # again, under the lock: another process may have written meanwhile
        return _train(fam, config, out, resume, dev, progress, iwae_k, eval_seed)


def _train(fam: Family, config: dict, out: Path, resume: bool, dev: torch.device, progress: bool,
           iwae_k: int | None, eval_seed: int) -> dict:
    """:func:`train_run` once the folder is checked and locked. A resumed run whose training
    finished (all its epochs, or stopped early) but whose final evaluation was cut short (no
    metrics.json: killed or stopped during it) is not trained again: it is evaluated from
    its checkpoint, as the uninterrupted run would have been."""
    dataset = fam.load_data(config["data"])
    torch.manual_seed(config["seed"])  # network initialisation is part of the seeded run
    parts = fam.build(config, dataset)
    if "prior" in config:  # the names of what was built, defaults included
        config["prior"] = parts["model"].prior.name
    if "guide" in config:
        config["guide"] = config["guide"] or guide_name(parts["guide"])
    if "likelihood" in config:
        config["likelihood"] = parts["model"].likelihood.name
    finished = _finished_unevaluated(out, config) if resume else None
    if resume and finished is None:
        check_resume(out, config)
    distributed.barrier()  # every process has checked the folder before rank 0 writes into it
    if finished is not None:
        if distributed.is_main():
            done = finished["epoch"]
            how = "stopped early" if finished.get("finished") else f"all {done} epochs"
            print(f"note: training of {out} finished ({how}, epoch {done}) but its evaluation did not; finishing "
                  "the evaluation", file=sys.stderr)
        _load_trained(parts, dataset, dev, finished)
        history = finished["history"]
    else:
        if distributed.is_main():
            write_json(out / "config.json", config)
        history = fam.train(parts, dataset, config, checkpoint=out / "checkpoint.pt", resume=resume, device=dev,
                            progress=progress)
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
        **({"processes": distributed.world()} if distributed.world() > 1 else {}),
    }
    if distributed.is_main():
        write_json(out / "metrics.json", metrics)
        fam.figures(parts, dataset, config, out)
    distributed.barrier()  # the run directory is complete when any process returns
    return metrics


def _finished_unevaluated(out: Path, config: dict) -> dict | None:
    """The checkpoint of the run in ``out`` when it has nothing left to train for
    ``config["epochs"]`` yet no metrics.json (its final evaluation was cut short); None
    otherwise (the usual resume checks then apply). The settings must still match."""
    if (out / "metrics.json").exists():
        return None
    state = load_checkpoint(out / "checkpoint.pt")
    try:
        check_epochs_left(state, config["epochs"])
    except RunFinishedError:
        check_settings(read_config(out), config)
        return state
    return None


def evaluate_run(fam: Family, parts: dict, dataset, config: dict, k: int, seed: int = 0,
                 progress: bool = False) -> dict:
    """The family's held-out metrics, seeded (the same command gives the same numbers; the
    seed is recorded as ``eval_seed``), timed (``eval_seconds``) and, with ``progress``, with
    a progress bar. Under torchrun, computed by all processes together
    (:func:`shared_metrics`), the same dict in every process."""
    start = time.perf_counter()
    if distributed.world() > 1:
        metrics = shared_metrics(fam, parts, dataset, config, k, seed, progress and distributed.is_main())
    else:
        seed_all(seed)
        metrics = fam.metrics(parts, dataset, config, k, progress=progress)
    return {**metrics, "eval_seed": seed, "eval_seconds": round(time.perf_counter() - start, 3)}


#: held-out metrics that are means over the test set's datapoints (``"rows"``) or frames
#: (``"frames"``): the mean over all processes is their shares' means weighted by rows or frames
SHARD_MEANS = {"test_elbo_nats": "rows", "test_iwae_nats": "rows",
               "test_elbo_per_frame_nats": "frames", "test_iwae_per_frame_nats": "frames"}
#: held-out counts: summed over the processes' shares
SHARD_SUMS = ("frames", "sequences")


def shared_metrics(fam: Family, parts: dict, dataset, config: dict, k: int, seed: int, progress: bool = False) -> dict:
    """The family's metrics computed by all processes together, the same dict in each.

    A Pyro pair (a family with a guide): each process evaluates its contiguous share of the
    test set (seeded ``seed + rank``); the likelihood numbers (:data:`SHARD_MEANS`: the
    k-draw importance-sampled log p(x) and the ELBO, where the cost is) are the shares'
    values weighted by their rows or frames, i.e. the sum of per-datapoint values over the
    sum of counts: the one-process numbers within Monte Carlo error. The metrics that are
    not means over datapoints cannot be reduced from shares (active units and code sparsity
    need each code's variance over the whole test set; MIG; a VAE-GAN's sample quality; the
    VRNN's validation ELBO): rank 0 computes them on the whole test set, in a pass with one
    importance draw whose likelihood numbers are discarded.
    The GAN and the restoration nets have no metric that reduces (sample quality; PSNR of
    seeded degradations): rank 0 computes them all. Rank 0's dict is sent to every process."""
    rank = distributed.rank()
    whole = None
    if "guide" in parts:
        share = _test_share(dataset)
        seed_all(seed + rank)
        local = fam.metrics(parts, share, config, k, progress=progress)
        rows, frames = _rows(share.test), float(local.get("frames", 0))
        means = [key for key in SHARD_MEANS if key in local]
        sums = [key for key in SHARD_SUMS if key in local]
        weight = {"rows": rows, "frames": frames}
        totals = distributed.all_reduce_sum([local[key] * weight[SHARD_MEANS[key]] for key in means]
                                            + [rows, frames] + [local[key] for key in sums])
        count = {"rows": totals[len(means)], "frames": totals[len(means) + 1]}
        reduced = {key: totals[i] / count[SHARD_MEANS[key]] for i, key in enumerate(means)}
        reduced.update({key: type(local[key])(total) for key, total in zip(sums, totals[len(means) + 2:])})
        if rank == 0:
            seed_all(seed)
            whole = {**fam.metrics(parts, dataset, config, 1), **reduced,
                     **{key: local[key] for key in ("iwae_k",) if key in local}}
    elif rank == 0:
        seed_all(seed)
        whole = fam.metrics(parts, dataset, config, k, progress=progress)
    return distributed.gather_objects(whole)[0]


def _test_share(dataset):
    """A shallow copy of ``dataset`` whose test split (and its labels or factors, where the
    data have them) is this process's contiguous share."""
    share = copy.copy(dataset)
    test = dataset.test
    share.test = tuple(map(distributed.share, test)) if isinstance(test, tuple) else distributed.share(test)
    if isinstance(dataset, data_mod.Dataset) and (dataset.labels or {}).get("test") is not None:
        share.labels = {**dataset.labels, "test": distributed.share(dataset.labels["test"])}
    return share


def _rows(split) -> float:
    return float((split[0] if isinstance(split, tuple) else split).shape[0])


def open_run(run_dir, device: str = "auto") -> Run:
    """The run in ``run_dir`` rebuilt: weights from its checkpoint (the best-validation
    weights where early stopping kept them), in eval mode, with the dataset on ``device``."""
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    fam = family(config["model"])
    dataset = fam.load_data(config["data"])
    parts = fam.build(config, dataset)
    dev = resolve_device(device)
    _load_trained(parts, dataset, dev, load_checkpoint(run_dir / "checkpoint.pt"))
    _eval_mode(parts)
    return Run(fam, parts, on_device(dataset, dev), config)


def _load_trained(parts: dict, dataset, dev: torch.device, state: dict) -> None:
    """The checkpoint ``state``'s weights in ``parts`` (on ``dev``): the best-validation
    weights where early stopping kept them, as training returns them."""
    for part in parts.values():
        part.to(dev)
    if "guide" in parts:  # a Pyro pair's lazily built guide parameters must exist before loading
        train = dataset.train if isinstance(dataset.train, tuple) else (dataset.train,)
        check_sites(parts["model"], parts["guide"], *(t[:2].to(dev) for t in train))
    weights = state["best"] if state.get("best") else state
    for name, part in parts.items():
        part.load_state_dict(weights[name])


def load_run(run_dir, device: str = "auto"):
    """(model, guide, dataset, config) of a finished or interrupted run (see :func:`open_run`);
    the model is the part that draws samples (the GAN's generator), the guide None where the
    family has none."""
    run = open_run(run_dir, device)
    return run.parts[run.family.sampler], run.parts.get("guide"), run.dataset, run.config


def eval_run(run_dir, device: str = "auto", iwae_k: int = 1000, seed: int = 0, progress: bool = False) -> dict:
    """Recompute the run's metrics from its checkpoint (seeded by ``seed``) and merge them
    into metrics.json (under torchrun the processes share the evaluation; rank 0 writes),
    with the run folder locked (:mod:`.lock`)."""
    dev = distributed.local_device(resolve_device(device))
    distributed.setup(dev)
    read_config(run_dir)  # a ppgen run (no lock file is put into other folders)
    path = check_writable(run_dir) / "metrics.json"  # before the computing
    with hold(run_dir):
        run = open_run(run_dir, dev)
        old = read_json(path) if path.exists() else {}
        metrics = {**old, **evaluate_run(run.family, run.parts, run.dataset, run.config, iwae_k, seed, progress),
                   "device": str(dev)}
        if distributed.is_main():
            write_json(path, metrics)
    return metrics


def _eval_mode(parts: dict) -> None:
    for part in parts.values():
        if isinstance(part, nn.Module):
            part.eval()


__all__ = ["Run", "train_run", "evaluate_run", "open_run", "load_run", "eval_run"]
