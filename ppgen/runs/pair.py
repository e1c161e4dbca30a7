"""Pyro model/guide families as runs: parts ``model`` and ``guide``, trained by
:func:`ppgen.infer.fit` (the one loop's Pyro step) with every :class:`~ppgen.infer.FitConfig`
setting in the run's config."""
from __future__ import annotations

from dataclasses import asdict
from typing import Callable

from ..infer import FitConfig, fit
from .family import Family

#: fit's settings and their defaults; a family overrides some with ``fit_defaults``
FIT_SETTINGS = asdict(FitConfig())


def pair_family(name: str, *, defaults: dict, load_data: Callable, build: Callable, metrics: Callable,
                figures: Callable, sample: Callable, priors, guides, fit_defaults: dict | None = None,
                training_split: Callable | None = None, continue_run: Callable | None = None,
                train_iwae_k: int = 1000, outputs: Callable | None = None,
                max_samples: int | None = None) -> Family:
    """A :class:`Family` from functions on ``(model, guide)``: ``build(config, dataset) ->
    (model, guide)``, ``metrics(model, guide, dataset, k, progress)``, ``figures(model, guide, dataset,
    run_dir)``, ``sample(model, n, out_path, dataset, length) -> [paths]`` and, optionally,
    ``training_split(config, dataset)`` (the data fit trains on when it is not the train
    split, e.g. augmented), ``continue_run(model, guide, dataset, ...)``, ``outputs`` and
    ``max_samples`` (:class:`Family`'s, where they differ from its defaults)."""

    def train(parts, dataset, config, **loop) -> dict:
        data = training_split(config, dataset) if training_split else dataset.train
        settings = {k: config[k] for k in FIT_SETTINGS}
        return asdict(fit(parts["model"], parts["guide"], data, dataset.val, **loop, **settings))

    def go_on(parts, dataset, *args, **kwargs):
        return continue_run(parts["model"], parts["guide"], dataset, *args, **kwargs)

    return Family(
        name=name, defaults={**defaults, **FIT_SETTINGS, **(fit_defaults or {})}, load_data=load_data,
        build=lambda config, dataset: dict(zip(("model", "guide"), build(config, dataset))),
        train=train,
        metrics=lambda parts, dataset, config, k, progress=False: metrics(parts["model"], parts["guide"], dataset, k=k,
                                                                          progress=progress),
        figures=lambda parts, dataset, config, run_dir: figures(parts["model"], parts["guide"], dataset, run_dir),
        sample=lambda parts, n, out_path, dataset, config, length: sample(parts["model"], n, out_path, dataset,
                                                                         length),
        continue_run=go_on if continue_run else None, priors=tuple(priors), guides=tuple(guides),
        train_iwae_k=train_iwae_k,
        **({"outputs": outputs} if outputs else {}), **({"max_samples": max_samples} if max_samples else {}))
