"""A model family as a run: the one interface that ``train_run``, ``load_run``, ``eval_run``
and the CLI call, for the Pyro pairs and the companions alike."""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Callable

from pathlib import Path

from ..figures.images import MAX_IMAGES
from ..guides import GUIDES
from ..priors import PRIORS, STEP_PRIORS

#: every prior name a family may accept: vector priors p(z) and per-step priors p(z_t | h_{t-1})
ALL_PRIORS = {**PRIORS, **STEP_PRIORS}


@dataclass(frozen=True)
class Family:
    """What a run of one model family is made of. ``parts`` is the dict that ``build``
    returns, name -> network; its names are the checkpoint's keys (``model`` and ``guide``
    for a Pyro pair, ``generator`` and ``discriminator`` for the GAN).

    - ``defaults``: every setting the family reads, with its default, written once, here;
      a run's config.json holds exactly these plus ``model`` and ``data``.
    - ``load_data(spec) -> dataset``.
    - ``build(config, dataset) -> parts``: untrained networks (the caller seeds).
    - ``train(parts, dataset, config, *, checkpoint, resume, device, progress) -> history``:
      through the one loop (:func:`ppgen.infer.loop.train`); a dict of per-epoch lists.
    - ``metrics(parts, dataset, config, k) -> dict``: held-out numbers (``k`` importance
      draws where there is a likelihood).
    - ``figures(parts, dataset, config, run_dir)``: samples.png and the like.
    - ``sample(parts, n, out_path, dataset, config, length) -> [paths written]``.
    - ``continue_run(parts, dataset, prefix, steps, n, out_path, piece, k) -> dict`` for
      sequence models, else None.
    - ``outputs(out_path, n, dataset) -> [paths]``: every file ``sample`` (or
      ``continue_run``) with ``n`` draws into ``out_path`` would write, so that the CLI can
      refuse to replace any of them before it computes; ``max_samples``: the most draws its
      figure shows legibly (``ppgen sample -n``, ``continue -n``).
    - ``priors``, ``guides``: the names the family accepts (empty: it takes none).
    - ``sampler``: the part that draws samples; ``last``: metric name -> history key whose
      final value metrics.json reports.
    - ``train_iwae_k``: importance draws of the evaluation at the end of ``ppgen train``
      (sized to the cost of the family's likelihood; ``ppgen eval --iwae-k`` sets any K).
    """

    name: str
    defaults: dict
    load_data: Callable
    build: Callable
    train: Callable
    metrics: Callable
    figures: Callable
    sample: Callable
    continue_run: Callable | None = None
    outputs: Callable = lambda out_path, n, dataset: [Path(out_path)]
    max_samples: int = MAX_IMAGES
    priors: tuple = ()
    guides: tuple = ()
    sampler: str = "model"
    last: dict = field(default_factory=dict)
    train_iwae_k: int = 1000

    def settings(self, config: dict) -> dict:
        """``model``, ``data`` and every setting of the family: the config's value where given
        (not None), the default otherwise (unset settings of other families are dropped, so
        they neither clutter config.json nor block a resume). Values are as JSON stores them (a
        tuple becomes a list), so a fresh config compares equal to a saved one. Refuses a
        prior or guide the family does not take, and any setting it does not read (say
        ``--rnn`` for the GAN): silently ignored, it would mislead."""
        for what, accepted, known in (("prior", self.priors, ALL_PRIORS), ("guide", self.guides, GUIDES)):
            name = config.get(what)
            if name is None:
                continue
            if name not in known:
                raise ValueError(f"unknown {what} {name!r}; choose one of: {', '.join(known)}")
            if name not in accepted:
                raise ValueError(f"{self.name} does not take the {what} {name!r}; it takes {self.accepts()}")
        given = {k: v for k, v in config.items() if v is not None}
        foreign = sorted(k for k in given if k not in self.defaults and k not in ("model", "data"))
        if foreign:
            raise ValueError(f"{self.name} does not take {', '.join(option(k) for k in foreign)}; its options: "
                             f"{', '.join(option(k) for k in self.defaults)}")
        filled = {"model": self.name, "data": config.get("data"), **{k: given.get(k, d) for k, d in self.defaults.items()}}
        return json.loads(json.dumps(filled))

    def accepts(self) -> str:
        """The priors and guides the family takes, in words (for errors and ``--help``)."""
        if not self.priors and not self.guides:
            return "no prior or guide"
        return f"priors: {', '.join(self.priors) or '-'}; guides: {', '.join(self.guides) or '-'}"


def option(setting: str) -> str:
    """The command-line spelling of a setting: ``z_dim`` -> ``--z-dim``."""
    return "--" + setting.replace("_", "-")


def guide_name(guide) -> str:
    """The registry name of a guide object (its class name when it is not registered)."""
    return next((name for name, cls in GUIDES.items() if type(guide) is cls), type(guide).__name__)


def on_device(dataset, device):
    """A shallow copy of ``dataset`` with its splits on ``device``."""
    moved = copy.copy(dataset)
    for split in ("train", "val", "test"):
        value = getattr(dataset, split)
        setattr(moved, split, tuple(t.to(device) for t in value) if isinstance(value, tuple) else value.to(device))
    return moved
