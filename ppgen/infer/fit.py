"""fit(): stochastic variational inference for any model/guide pair.

The Pyro family's step of the one loop (:mod:`.loop`): mini-batch -> objective -> Adam
update, a validation ELBO each epoch for early stopping. Optimisation uses the
PyTorch optimiser on ``model.parameters()`` and ``guide.parameters()`` directly, the same
parameters that ``pyro.infer.Trace_ELBO()(model, guide)`` would expose as an ``ELBOModule``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..guides import check_sites
from ..models.interfaces import ChecksData
from ..nn.device import resolve_device
from .loop import NonFiniteLossError, Step, train
from .objectives import ELBOS, TraceELBO, with_beta


@dataclass
class FitConfig:
    """Everything that shapes a run; saved in the checkpoint and compared on resume."""

    epochs: int = 100
    batch_size: int = 128
    lr: float = 1e-3
    elbo: str = "trace"
    num_particles: int = 1
    beta: float = 1.0
    anneal_epochs: float = 0.0
    clip_norm: float | None = None
    lr_schedule: str = "constant"
    weight_decay: float = 0.0
    patience: int | None = None
    seed: int = 0

    def check(self) -> None:
        if self.elbo not in ELBOS:
            raise ValueError(f"unknown elbo {self.elbo!r}; choose one of: {', '.join(ELBOS)}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"unknown lr_schedule {self.lr_schedule!r}; choose one of: {', '.join(LR_SCHEDULES)}")
        for name in ("epochs", "batch_size", "num_particles"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (self.lr > 0 and self.beta >= 0 and self.anneal_epochs >= 0):
            raise ValueError("lr must be > 0, beta >= 0 and anneal_epochs >= 0")


LR_SCHEDULES = {
    "constant": lambda opt, epochs: torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1.0),
    "cosine": lambda opt, epochs: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs, eta_min=0.0),
    "step": lambda opt, epochs: torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, epochs // 3), gamma=0.3),
}


@dataclass
class History:
    """Per-epoch records (ELBO per datapoint, in nats; higher is better) and per-step losses."""

    epoch: list = field(default_factory=list)
    train_elbo: list = field(default_factory=list)
    val_elbo: list = field(default_factory=list)
    beta: list = field(default_factory=list)
    lr: list = field(default_factory=list)
    seconds: list = field(default_factory=list)
    step_loss: list = field(default_factory=list)
    best_epoch: int = 0
    best_val_elbo: float = -math.inf
    stopped_early: bool = False
    device: str = "cpu"

    @property
    def train_seconds(self) -> float:
        return float(sum(self.seconds))


def fit(model, guide, data, val_data=None, *, checkpoint: str | Path | None = None, resume: bool = False,
        device: str | torch.device = "auto", progress: bool = True, validate: bool = True,
        **config) -> History:
    """Train ``guide`` and the model's parameters by SVI; return the :class:`History`.

    ``data`` and ``val_data`` are a tensor ``[N, ...]`` or a tuple of tensors sharing the
    first dimension (for example ``(x, mask)``); batches are passed as ``model(*batch)``.
    A :class:`ppgen.data.Dataset` gives both splits. Keyword arguments fill a
    :class:`FitConfig` (``epochs``, ``batch_size``, ``lr``, ``elbo`` in trace|meanfield|iwae,
    ``num_particles``, ``beta``, ``anneal_epochs``, ``clip_norm``, ``lr_schedule``,
    ``patience`` for early stopping on the validation ELBO, ``seed``).

    Trained by the one loop (:func:`ppgen.infer.loop.train`): with ``checkpoint`` a file is
    written atomically after every epoch; ``resume=True`` continues from it exactly (same RNG
    streams). A non-finite loss raises :class:`NonFiniteLossError` before the optimiser step,
    leaving the last good checkpoint untouched.
    """
    cfg = FitConfig(**config)
    cfg.check()
    if hasattr(data, "train") and hasattr(data, "val"):
        data, val_data = data.train, data.val if val_data is None else val_data
    data, val_data = _as_tuple(data), _as_tuple(val_data) if val_data is not None else None
    if validate:
        _check_data(model, data, "training data")
        if val_data is not None:
            _check_data(model, val_data, "validation data")
    dev = resolve_device(device)
    steps_per_epoch = math.ceil(data[0].shape[0] / cfg.batch_size)

    def make_step(dev) -> Step:
        model.to(dev), guide.to(dev)
        check_sites(model, guide, *(t[:2].to(dev) for t in data))  # also creates lazily-built guide params
        params = list(model.parameters()) + list(guide.parameters())
        optimizer = make_optimizer(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        scheduler = LR_SCHEDULES[cfg.lr_schedule](optimizer, cfg.epochs)
        objective = ELBOS[cfg.elbo](cfg.num_particles)
        anneal_steps = cfg.anneal_epochs * steps_per_epoch
        val = tuple(t.to(dev) for t in val_data) if val_data is not None else None
        last = {}

        def update(batch, t, apply) -> dict:
            beta = cfg.beta * (min(1.0, (t + 1) / anneal_steps) if anneal_steps else 1.0)
            last["beta"] = beta
            loss = objective(with_beta(model, beta), with_beta(guide, beta), *batch) / batch[0].shape[0]
            apply(loss, optimizer)
            value = loss.item()
            return {"train_elbo": -value, "loss": value}

        def end_epoch() -> dict:
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            return {"beta": last["beta"], "lr": lr}

        return Step(update, {"model": model, "guide": guide, "optimizer": optimizer, "scheduler": scheduler},
                    end_epoch=end_epoch, per_step=("loss",), keep_best=("model", "guide"), score_name="val_elbo",
                    score=(lambda: elbo_per_datapoint(model, guide, val, cfg.batch_size)) if val is not None else None)

    _, history = train(make_step, data, asdict(cfg), device=dev, checkpoint=checkpoint, resume=resume,
                       progress=progress, desc="fit")
    return History(**history, device=str(dev))


def make_optimizer(params, lr: float, weight_decay: float = 0.0) -> torch.optim.Adam:
    """Adam with the fused kernel where the device has one: the whole update in one pass
    instead of ~10 small ops per parameter tensor (its gain: BENCHMARKS.md, "VAE step overhead").
    Same algorithm and state dict."""
    try:
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, ValueError):  # a device or dtype without a fused Adam
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


@torch.no_grad()
def elbo_per_datapoint(model, guide, data, batch_size: int = 512, num_particles: int = 1) -> float:
    """The ELBO averaged over datapoints (nats), beta = 1, in eval mode."""
    data = _as_tuple(data)
    was_training = model.training, guide.training
    model.eval(), guide.eval()
    objective = TraceELBO(num_particles)
    n, total = data[0].shape[0], 0.0
    for i in range(0, n, batch_size):
        total -= objective(model, guide, *(t[i:i + batch_size] for t in data)).item()
    model.train(was_training[0]), guide.train(was_training[1])
    return total / n


def _as_tuple(data):
    return tuple(data) if isinstance(data, (tuple, list)) else (data,)


def _check_data(model, data, what: str) -> None:
    if not all(isinstance(t, torch.Tensor) for t in data):
        raise TypeError(f"{what} must be tensors, got {[type(t).__name__ for t in data]}")
    n = data[0].shape[0]
    if n == 0:
        raise ValueError(f"{what} is empty")
    if any(t.shape[0] != n for t in data):
        raise ValueError(f"{what}: tensors disagree on the number of rows: {[tuple(t.shape) for t in data]}")
    if isinstance(model, ChecksData):
        try:
            model.check_data(*data)
        except ValueError as e:
            raise ValueError(f"{what}: {e}") from None


__all__ = ["FitConfig", "History", "NonFiniteLossError", "fit", "elbo_per_datapoint", "make_optimizer", "LR_SCHEDULES"]
