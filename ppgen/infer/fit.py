"""fit(): stochastic variational inference for any model/guide pair.

The Pyro family's step of the one loop (:mod:`.loop`): mini-batch -> objective -> Adam
update, a validation ELBO each epoch for early stopping. Model and guide are any Pyro
programs: plain functions, ``nn.Module``s, ``PyroModule``s, autoguides. The PyTorch
optimiser gets what Pyro's SVI would optimise (:func:`pair_parameters`): module parameters
and every ``pyro.param`` the pair touches, unconstrained. Minibatches of a model with global
latents are scaled by N/B (:class:`DataScaling`) so that the objective estimates the
full-data ELBO. Partially labelled data (:class:`ppgen.data.PartiallyLabelled`) trains a
semi-supervised pair on each minibatch's labelled and unlabelled rows together
(:class:`SemiSupervised`).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from contextlib import contextmanager

import pyro
import torch
from pyro import poutine
from torch import nn

from ..data.base import model_args
from ..data.labels import MISSING, PartiallyLabelled
from ..data.stream import MappedRows, check_finite
from ..guides import check_sites
from ..guides.sites import SiteStructure, enumerated_sites, site_structure
from ..models.interfaces import ChecksData
from ..nn.device import resolve_device
from . import distributed
from .arguments import nonnegative_int, positive_int, real
from .batches import Shard, Streamed
from .checkpoint import rng_state, set_rng_state
from .loop import NonFiniteLossError, Step, train
from .precision import check_precision
from .objectives import ELBOS, EnumELBO, TraceELBO, with_beta, with_data_scale


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
    precision: str = "fp32"

    def check(self) -> None:
        """Every setting checked by the name the caller gave it (``fit(..., epochs=0)`` says
        ``epochs``); whole numbers written as floats (``epochs=1e3``) become ints."""
        check_precision(self.precision)
        if self.elbo not in ELBOS:
            raise ValueError(f"unknown elbo {self.elbo!r}; choose one of: {', '.join(ELBOS)}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"unknown lr_schedule {self.lr_schedule!r}; choose one of: {', '.join(LR_SCHEDULES)}")
        for name in ("epochs", "batch_size", "num_particles"):
            setattr(self, name, positive_int(getattr(self, name), name))
        self.patience = nonnegative_int(self.patience, "patience", optional=True)  # 0: stop at the first worse epoch
        self.seed = nonnegative_int(self.seed, "seed")
        self.lr = real(self.lr, "lr", low=0, strict=True)
        self.clip_norm = real(self.clip_norm, "clip_norm", low=0, strict=True, optional=True)
        for name in ("beta", "anneal_epochs", "weight_decay"):
            setattr(self, name, real(getattr(self, name), name, low=0))

    @classmethod
    def of(cls, config: dict) -> "FitConfig":
        """The checked config of ``fit``'s keyword arguments; an unknown one is a ``TypeError``
        naming it and the known ones (as Python says of any unexpected keyword argument)."""
        known = [f.name for f in fields(cls)]
        unknown = [name for name in config if name not in known]
        if unknown:
            raise TypeError(f"fit() got unexpected keyword argument(s) {', '.join(map(repr, unknown))}; "
                            f"known: model, guide, data, val_data, aux, checkpoint, resume, device, progress, "
                            f"validate and the settings {', '.join(known)}")
        cfg = cls(**config)
        cfg.check()
        return cfg


#: Rows at the start of streamed training data that are checked and probed before training.
STREAM_SAMPLE = 1024

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
    aux_loss: list = field(default_factory=list)
    best_epoch: int = 0
    best_val_elbo: float = -math.inf
    stopped_early: bool = False
    device: str = "cpu"

    @property
    def train_seconds(self) -> float:
        return float(sum(self.seconds))


def fit(model, guide, data, val_data=None, *, aux: tuple | None = None, checkpoint: str | Path | None = None,
        resume: bool = False, device: str | torch.device = "auto", progress: bool = True, validate: bool = True,
        **config) -> History:
    """Train ``guide`` and the model's parameters by SVI; return the :class:`History`.

    ``data`` and ``val_data`` are a tensor ``[N, ...]`` or a tuple of tensors sharing the
    first dimension (for example ``(x, mask)``); batches are passed as ``model(*batch)``.
    A :class:`ppgen.data.Dataset` gives both splits. ``data`` may also be rows on disk, a
    :class:`ppgen.data.MappedRows` (the train split of ``load("stream:PATH")``): read batch by
    batch (:class:`~ppgen.infer.batches.Streamed`), checked on its first rows and then per
    batch, never loaded whole. Keyword arguments fill a
    :class:`FitConfig` (``epochs``, ``batch_size``, ``lr``, ``elbo`` in trace|meanfield|iwae|enum,
    ``num_particles``, ``beta``, ``anneal_epochs``, ``clip_norm``, ``lr_schedule``,
    ``patience`` for early stopping on the validation ELBO, ``seed``).

    Discrete latents: a guide whose sites are marked for enumeration (``config_enumerate``,
    ``infer={"enumerate": ...}``) trains with ``elbo="enum"`` (:class:`~ppgen.infer.objectives.EnumELBO`,
    Pyro's ``TraceEnum_ELBO``), which sums them out; the other objectives would sample them by
    the score-function estimator and refuse such a guide with a ``ValueError``.

    Partially labelled data: ``data`` a :class:`ppgen.data.PartiallyLabelled` (``val_data``
    too, or plain rows; its validation ELBO is of x alone) trains a semi-supervised pair
    ``model(x, y=None)`` / ``guide(x, y=None)`` (y observed when given, latent otherwise, as in
    Kingma et al. 2014's M2): each minibatch's labelled rows are passed as ``model(x_l, y_l)``,
    its unlabelled rows as ``model(x_u)``, and the two -ELBOs are summed, so every datapoint
    weighs the same whether labelled or not. ``aux=(model_classify, guide_classify)`` adds
    the auxiliary classification loss of Kingma et al. the Pyro way: the -ELBO of that pair
    (typically ``y ~ q(y | x)`` observed under ``poutine.scale(alpha)`` and an empty guide) on
    the labelled rows, computed in the same step. History records ``train_elbo`` (the summed
    ELBOs per datapoint) and ``aux_loss`` (per datapoint) apart.

    ``model`` and ``guide`` are any Pyro programs taking the batch's tensors (functions,
    ``nn.Module``s, ``PyroModule``s, autoguides); :func:`ppgen.guides.check_sites` runs both
    on two rows first and names what does not fit. Optimised: the pair's module parameters
    and the ``pyro.param``s it touches (:func:`pair_parameters`; ``ValueError`` if none).
    ``pyro.param`` values live in Pyro's global param store: a second ``fit`` of the same
    functions continues from them unless ``pyro.clear_param_store()`` is called first.

    Minibatches: the data plate is the plate at dim -1 that the observed sites are in, with
    one entry per row of the batch. Sites inside it are per-datapoint (local), latent sites
    outside it are global. A model with global latents has its local sites (model and guide)
    scaled by N/B, so each step estimates the full-data ELBO; a model whose latents are all
    local keeps its per-datapoint objective. A data plate that subsamples by itself is left
    alone. History ELBOs are per datapoint either way (for a global model: full-data ELBO / N).

    Trained by the one loop (:func:`ppgen.infer.loop.train`): with ``checkpoint`` a file is
    written atomically after every epoch (module weights, the param-store values of the
    ``pyro.param``s no module holds, optimiser, RNG streams); ``resume=True`` continues from
    it exactly. A non-finite loss raises :class:`NonFiniteLossError` before the optimiser
    step, leaving the last good checkpoint untouched.

    Under torchrun (``torchrun --nproc-per-node=N script.py``) the same call trains
    data-parallel: ``batch_size`` is the global batch, split over the processes, whose
    gradients DistributedDataParallel averages; the validation ELBO is averaged over all
    processes' shares of ``val_data``; rank 0 writes the checkpoint
    (:mod:`ppgen.infer.distributed`). The pair's parameters must then all be in modules (a
    ``pyro.param`` outside any module is refused with a ``ValueError`` that says how to fix it).
    """
    cfg = FitConfig.of(config)
    if hasattr(data, "train") and hasattr(data, "val"):
        data, val_data = data.train, data.val if val_data is None else val_data
    partial = data if isinstance(data, PartiallyLabelled) else None
    if aux is not None and partial is None:
        raise ValueError("aux=(model_classify, guide_classify) is a loss on labelled rows: pass the training data as "
                         "ppgen.data.PartiallyLabelled(x, labels)")
    if partial is not None:
        data = (partial.x, partial.labels)  # shuffled together; each batch is split by SemiSupervised
    if isinstance(val_data, PartiallyLabelled):
        val_data = val_data.x  # the validation ELBO is of x alone, y summed or integrated out
    stream = data if isinstance(data, MappedRows) else None  # rows on disk, read batch by batch
    # a streamed source is checked and probed on its first rows here, then batch by batch
    data = model_args(stream.read(0, min(len(stream), STREAM_SAMPLE)) if stream else data)
    val_data = model_args(val_data) if val_data is not None else None
    if validate:
        _check_data(model, data[:1] if partial else data,
                    f"training data (first rows of {stream.where})" if stream else "training data")
        if val_data is not None:
            _check_data(model, val_data, "validation data")
    dev = distributed.local_device(resolve_device(device))
    distributed.setup(dev)  # under torchrun: join the other processes now, so that streamed data is sharded
    n = len(stream) if stream else data[0].shape[0]
    steps_per_epoch = math.ceil(n / cfg.batch_size)

    def make_step(dev) -> Step:
        for program in (model, guide):
            if isinstance(program, nn.Module):
                program.to(dev)
        semi = SemiSupervised(partial, aux) if partial is not None else None
        probes = semi.probes(data, dev) if semi else [tuple(t[:2].to(dev) for t in data)]
        probe = probes[0]  # the model's arguments without labels: what its structure is read from
        for args in probes:
            check_sites(model, guide, *args)  # also creates lazily-built guide params (autoguides, pyro.param)
        with _rng_untouched():  # the seeded draws of the built-in families stay what they were
            scaling = DataScaling.of(model, probe, n, cfg.batch_size)
            if cfg.elbo == "iwae" and scaling.structure.global_latents:
                raise ValueError(f"elbo='iwae' needs every latent site inside the data plate; model {_name(model)} "
                                 f"has global latent sites {list(scaling.structure.global_latents)}: use elbo='trace'")
            if semi and scaling.active:
                raise ValueError(f"partially labelled data need every latent site of model {_name(model)} inside the "
                                 f"data plate; it has global latent sites {list(scaling.structure.global_latents)}")
            enumerated = enumerated_sites(guide, *probe)
            if enumerated and not ELBOS[cfg.elbo].enumerates:
                raise ValueError(f"guide {_name(guide)} marks sites {enumerated} for enumeration (config_enumerate), "
                                 f"which elbo={cfg.elbo!r} would sample by the score-function estimator: use elbo='enum'")
            named, store_params = pair_parameters(model, guide, *probe)
            for args in probes[1:]:
                _merge_parameters(named, store_params, *pair_parameters(model, guide, *args))
            if semi and aux is not None:
                _merge_parameters(named, store_params, *pair_parameters(*aux, *probes[-1]))
        if store_params and distributed.world() > 1:
            raise ValueError(
                f"under torchrun the gradients are averaged over the processes by DistributedDataParallel, which sees "
                f"module parameters only; the pyro.param sites {sorted(store_params)} of model {_name(model)} and guide "
                f"{_name(guide)} are in no module: make model or guide a PyroModule with PyroParam attributes (or an "
                "nn.Module with nn.Parameters), or train in one process")
        # the pair's -ELBO as a module's forward, whose parameters' gradients DDP averages over the processes
        # (as Pyro's own DDP example wraps its loss in an ELBOModule); in one process, the plain computation
        pair_loss = distributed.synced(named)
        optimizer = make_optimizer(named, lr=cfg.lr, weight_decay=cfg.weight_decay)
        scheduler = LR_SCHEDULES[cfg.lr_schedule](optimizer, cfg.epochs)
        objective = ELBOS[cfg.elbo](cfg.num_particles)
        val_objective = EnumELBO() if enumerated else None  # the validation ELBO sums enumerated sites out too
        anneal_steps = cfg.anneal_epochs * steps_per_epoch
        val = tuple(t.to(dev) for t in val_data) if val_data is not None else None
        val_scaling = None if val is None else DataScaling(scaling.structure, val[0].shape[0], False) \
            if not scaling.active else DataScaling.of(model, tuple(t[:2] for t in val), val[0].shape[0], cfg.batch_size)
        val = tuple(map(distributed.share, val)) if val is not None else None
        last = {}

        def update(batch, t, apply) -> dict:
            beta = cfg.beta * (min(1.0, (t + 1) / anneal_steps) if anneal_steps else 1.0)
            last["beta"] = beta
            scaled_model, scaled_guide, per = scaling.wrap(model, guide, batch[0].shape[0])
            pair = with_beta(scaled_model, beta), with_beta(scaled_guide, beta)
            if semi is not None:
                return semi.update(objective, pair, batch, per, pair_loss, lambda loss: apply(loss, optimizer))
            loss = pair_loss(lambda: objective(*pair, *batch) / per)
            value = apply(loss, optimizer)  # the float it checked: the step's one host-device sync
            return {"train_elbo": -value, "loss": value}

        def end_epoch() -> dict:
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            return {"beta": last["beta"], "lr": lr}

        parts = {name: p for name, p in (("model", model), ("guide", guide)) if isinstance(p, nn.Module)}
        if store_params:
            parts["params"] = ParamStoreState(store_params)
        keep = tuple(parts)
        parts.update(optimizer=optimizer, scheduler=scheduler)
        return Step(update, parts, end_epoch=end_epoch, per_step=("loss",), keep_best=keep, score_name="val_elbo",
                    score=(lambda: shared_elbo_per_datapoint(model, guide, val, cfg.batch_size, scaling=val_scaling,
                                                             objective=val_objective))
                    if val is not None else None)

    shard = Shard(distributed.rank(), distributed.world(), cfg.seed)
    batches = _streamed(model, stream, cfg.batch_size, dev, validate, shard) if stream else data
    _, history = train(make_step, batches, asdict(cfg), device=dev, checkpoint=checkpoint, resume=resume,
                       progress=progress, desc="fit")
    return History(**history, device=str(dev))


class SemiSupervised:
    """How a minibatch of partially labelled rows (:class:`ppgen.data.PartiallyLabelled`)
    enters the objective: the rows with a label as ``model(x_l, y_l)``, the others as
    ``model(x_u)``, their -ELBOs summed (each datapoint counted once, labelled or not), plus
    the ``aux`` pair's -ELBO on the labelled rows (Kingma et al. 2014's classification loss,
    written by the user as a Pyro pair), all divided by the batch's rows."""

    def __init__(self, data: PartiallyLabelled, aux: tuple | None):
        self.data, self.aux = data, aux
        self.aux_objective = TraceELBO()

    def probes(self, rows: tuple, device) -> list[tuple]:
        """Two rows of each kind, as the model's arguments: ``[(x_u,), (x_l, y_l)]`` (the
        unlabelled probe is any two rows without their labels; the labelled one only where
        some rows have a label)."""
        x, labels = rows
        out = [(x[:2].to(device),)]
        known = (labels != MISSING).nonzero().squeeze(1)[:2]
        if len(known):
            out.append(tuple(t.to(device) for t in self.data.split(x[known], labels[known])[0]))
        return out

    def update(self, objective, pair, batch: tuple, per: int, pair_loss, apply) -> dict:
        labelled, unlabelled = self.data.split(*batch)
        parts = {}

        def loss():
            total = 0.0
            if unlabelled[0].shape[0]:
                total = total + objective(*pair, *unlabelled)
            if labelled[0].shape[0]:
                total = total + objective(*pair, *labelled)
                if self.aux is not None:
                    aux = self.aux_objective(*self.aux, *labelled)
                    parts["aux"] = aux.detach()
                    total = total + aux
            return total / per

        value = apply(pair_loss(loss))
        aux = float(parts["aux"]) / per if "aux" in parts else 0.0
        return {"train_elbo": -(value - aux), "loss": value, "aux_loss": aux}


def _merge_parameters(named: list, store: dict, more: list, more_store: dict) -> None:
    """Add the parameters of another run (the labelled call, the auxiliary pair) that the
    first did not touch."""
    seen = {id(p) for p in named}
    named.extend(p for p in more if id(p) not in seen)
    store.update({k: v for k, v in more_store.items() if k not in store})


@dataclass(frozen=True)
class DataScaling:
    """How a minibatch of B of the N rows enters the objective.

    A model whose latents are all per-datapoint (inside the data plate, the plate at dim -1
    of its observed sites) keeps its per-datapoint objective: the minibatch's -ELBO over B.
    A model with global latents (sites outside the data plate) gets the minibatch's
    per-datapoint sites, in model and guide, scaled by N/B, as ``pyro.plate(...,
    subsample=...)`` would: the scaled -ELBO estimates the full-data -ELBO, recorded over N
    (per datapoint, as for every model). A data plate that subsamples by itself
    (``pyro.plate("data", N, subsample=...)``, its size not the batch's rows) already scales
    its sites and is left alone."""

    structure: SiteStructure
    n: int
    active: bool

    @staticmethod
    def of(model, probe: tuple, n: int, batch_size: int) -> "DataScaling":
        structure = site_structure(model, *probe)
        scaled = bool(structure.global_latents) and not structure.subsampled
        if scaled and structure.data_plate is None and batch_size < n:
            raise ValueError(
                f"model {_name(model)} has latent sites {list(structure.global_latents)} and no observed site in a "
                "plate at dim -1, so ppgen cannot tell global from per-datapoint sites under minibatches: put the "
                f"observed sites in pyro.plate(..., x.shape[0]) over the batch's rows, or use batch_size >= {n}")
        return DataScaling(structure, n, scaled)

    def wrap(self, model, guide, rows: int) -> tuple:
        """``(model, guide, divisor)``: the programs for one batch of ``rows`` rows and what
        their -ELBO is divided by to give it per datapoint."""
        if not self.active:
            return model, guide, rows
        plate, local, factor = self.structure.data_plate, self.structure.local, self.n / rows
        return (with_data_scale(model, plate, local, factor), with_data_scale(guide, plate, local, factor), self.n)


def pair_parameters(model, guide, *args) -> tuple[list, dict]:
    """What Pyro's SVI optimises for ``(model, guide)``: the parameters of each program that
    is an ``nn.Module`` (a ``PyroModule``'s ``PyroParam``s included), then every parameter
    that one run of the guide and the model replayed on it touches through ``pyro.param``
    (the param store, as ``poutine.trace(param_only=True)`` sees it), as unconstrained
    tensors, each once. Returns ``(params, store)``: the list, and ``{name: tensor}`` of the
    param-store ones that no module holds (these are checkpointed by name).
    Raises ``ValueError`` naming model and guide if there is nothing to optimise."""
    params, seen = [], set()
    for program in (model, guide):
        if isinstance(program, nn.Module):
            for p in program.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    params.append(p)
    with pyro.validation_enabled(False), poutine.block(), poutine.trace(param_only=True) as tr:
        guide_trace = poutine.trace(guide).get_trace(*args)
        poutine.replay(model, trace=guide_trace)(*args)
    store = {}
    for name, site in tr.trace.nodes.items():
        unconstrained = site["value"].unconstrained() if hasattr(site["value"], "unconstrained") else site["value"]
        if id(unconstrained) not in seen and unconstrained.requires_grad:
            seen.add(id(unconstrained))
            params.append(unconstrained)
            store[name] = unconstrained
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError(f"model {_name(model)} and guide {_name(guide)} have no parameters to optimise: neither "
                         "is an nn.Module with parameters and neither calls pyro.param")
    return params, store


class ParamStoreState:
    """The param-store parameters of a pair that no module holds, as a checkpoint part:
    ``state_dict()`` gives ``{name: unconstrained tensor}`` (plain tensors, loadable with
    ``weights_only=True``; constraints are not saved, the program sets them again when it
    calls ``pyro.param``), ``load_state_dict`` copies values in place, so the optimiser keeps
    updating the same tensors."""

    def __init__(self, params: dict):
        self.params = params

    def state_dict(self) -> dict:
        return {name: t.detach() for name, t in self.params.items()}

    def load_state_dict(self, state: dict) -> None:
        if set(state) != set(self.params):
            raise ValueError(f"the checkpoint holds the pyro.param sites {sorted(state)}, the pair has "
                             f"{sorted(self.params)}")
        with torch.no_grad():
            for name, t in self.params.items():
                t.copy_(state[name])


@contextmanager
def _rng_untouched():
    state = rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


def make_optimizer(params, lr: float, weight_decay: float = 0.0) -> torch.optim.Adam:
    """Adam with the fused kernel where the device has one: the whole update in one pass
    instead of ~10 small ops per parameter tensor (its gain: BENCHMARKS.md, "VAE step overhead").
    Same algorithm and state dict."""
    try:
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, ValueError):  # a device or dtype without a fused Adam
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


@torch.no_grad()
def elbo_per_datapoint(model, guide, data, batch_size: int = 512, num_particles: int = 1, *,
                       scaling: DataScaling | None = None, objective=None) -> float:
    """The ELBO averaged over datapoints (nats), beta = 1, with modules in eval mode. For a
    model with global latents, the full-data ELBO over N: each batch's ELBO with its
    per-datapoint sites scaled by N/B (:class:`DataScaling`, found from a trace unless
    ``scaling`` is given), averaged over batches by their share of the rows. ``objective``:
    the estimator (default :class:`TraceELBO`; :class:`EnumELBO` for a guide with enumerated sites)."""
    data = model_args(data)
    n = data[0].shape[0]
    if scaling is None:
        with _rng_untouched():
            scaling = DataScaling.of(model, tuple(t[:2] for t in data), n, batch_size)
    modules = [p for p in (model, guide) if isinstance(p, nn.Module)]
    was_training = [m.training for m in modules]
    for m in modules:
        m.eval()
    objective = objective or TraceELBO(num_particles)
    total = 0.0
    for i in range(0, n, batch_size):
        batch = tuple(t[i:i + batch_size] for t in data)
        rows = batch[0].shape[0]
        scaled_model, scaled_guide, per = scaling.wrap(model, guide, rows)
        value = objective(scaled_model, scaled_guide, *batch).item()
        total -= value if per == rows else value * rows / per
    for m, mode in zip(modules, was_training):
        m.train(mode)
    return total / n


def shared_elbo_per_datapoint(model, guide, share: tuple, batch_size: int, scaling: DataScaling | None,
                              objective=None) -> float:
    """:func:`elbo_per_datapoint` of data split over the processes, each holding its
    :func:`ppgen.infer.distributed.share`: the per-datapoint ELBO of all the rows, the same number in
    every process (all-reduced sums of each share's ELBO and rows). In one process, the
    ELBO of ``share`` itself."""
    if distributed.world() == 1:
        return elbo_per_datapoint(model, guide, share, batch_size, scaling=scaling, objective=objective)
    rows = share[0].shape[0]  # a share may be empty when there are fewer rows than processes
    total = elbo_per_datapoint(model, guide, share, batch_size, scaling=scaling, objective=objective) * rows if rows else 0.0
    return distributed.mean_over_ranks(total, rows)


def _name(fn) -> str:
    return getattr(fn, "__name__", type(fn).__name__)


def _streamed(model, rows: MappedRows, batch_size: int, dev, validate: bool, shard: Shard) -> Streamed:
    """The training batches of rows on disk; with ``validate`` each batch of the first
    epoch is checked as it is read (finite values when the files hold floats, and the
    model's support where it declares one), since the data as a whole is never in memory to
    be checked up front; later epochs hold the same rows."""

    def check(batch: tuple, where: str) -> None:
        what = f"training data ({rows.where}), {where}"
        if rows.floating:  # bool and integer files hold no NaN or inf
            for t in batch:
                check_finite(t, what)
        _check_data(model, batch, what)

    return Streamed(rows, batch_size, dev, shard, check=check if validate else None)


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


__all__ = ["FitConfig", "History", "NonFiniteLossError", "fit", "elbo_per_datapoint", "make_optimizer", "LR_SCHEDULES",
           "DataScaling", "SemiSupervised", "pair_parameters", "shared_elbo_per_datapoint"]
