"""Sample quality of a trained generative model on a dataset, on one footing for every family.

Every model family is judged on the same footing: ``n`` samples on the unit scale [0, 1]
(means of p(x|z) for the VAE family, generator outputs for the GAN) scored by
:func:`ppgen.companions.quality.quality_report` against the held-out test split, in the feature space
of one :class:`ppgen.companions.quality.FeatureClassifier` trained on the dataset's labels (digit
classes) or generative factors (sprites). Each metric comes with its value for real data
(a same-sized subset of the training split), what a perfect model would score. Where a run
has an encoder and the data have ground-truth factors, the mutual information gap (MIG) of
its posterior means is reported too, and its test ELBO / IWAE from ``metrics.json``.
"""
from __future__ import annotations

import math

import torch

from .. import likelihoods
from ..data.base import check_images
from ..evaluate import posterior_mean
from ..models.interfaces import Samples
from ..nn.mlp import eval_mode
from .quality import mutual_information_gap, quality_report, train_feature_classifier

#: the flat metric names, read off quality_report's nested dict (lower-is-better ones marked)
QUALITY_KEYS = {
    "fid": ("fid", None), "kid": ("kid", "mean"), "precision": ("prdc", "precision"), "recall": ("prdc", "recall"),
    "density": ("prdc", "density"), "coverage": ("prdc", "coverage"), "sharpness": ("laplacian_variance", None),
    "nn_train_distance": ("memorisation", "median"),
}
_CLASSIFIERS: dict = {}


def unit_scale(dataset) -> float:
    """What the dataset's values are divided by to lie in [0, 1] (16 for the digits counts)."""
    lik = likelihoods.LIKELIHOODS[dataset.likelihood](dataset.x_dim, **dataset.likelihood_kwargs)
    return float(lik.input_scale)


def unit_images(dataset, split: str) -> torch.Tensor:
    """A split of an image dataset on the unit scale, checked: flat ``[N, C*H*W]`` in [0, 1]."""
    if dataset.image_shape is None:
        raise ValueError(f"dataset {dataset.name!r} has no image_shape; sample quality needs images")
    return check_images(getattr(dataset, split) / unit_scale(dataset), dataset.image_shape, f"{split} images")


def classifier_epochs(n_train: int, batch_size: int = 128, min_steps: int = 600) -> int:
    """At least 5 epochs and about ``min_steps`` optimiser steps (small sets get more epochs)."""
    return max(5, math.ceil(min_steps / math.ceil(n_train / batch_size)))


def feature_classifier(dataset, *, seed: int = 0, device="cpu", progress: bool = False):
    """``(classifier, held-out accuracy)`` trained on the training split's labels, seeded, and
    cached per dataset within the process (so runs compared together share one feature space).
    Training it is most of the cost of :func:`sample_quality` (at least 600 optimiser steps of a
    conv net; ``progress`` shows them)."""
    if not dataset.labels or "train" not in dataset.labels:
        raise ValueError(f"dataset {dataset.name!r} has no labels; the quality features need labels or factors "
                         "(digits, sprites)")
    key = (dataset.name, tuple(dataset.train.shape), seed, str(device))
    if key not in _CLASSIFIERS:
        train = unit_images(dataset, "train")
        _CLASSIFIERS[key] = train_feature_classifier(train, dataset.labels["train"].cpu(), dataset.image_shape,
                                                     epochs=classifier_epochs(train.shape[0]), device=device, seed=seed,
                                                     progress=progress)
    return _CLASSIFIERS[key]


def sample_quality(samples: torch.Tensor, dataset, *, seed: int = 0, device="cpu", progress: bool = False) -> dict:
    """Flat quality metrics of unit-scale ``samples`` against the test split: ``<metric>`` for
    the samples and ``<metric>_real`` for real data (the ceiling), plus the classifier's
    held-out accuracy. FID, KID and NN-train distance: lower is better; precision, recall,
    density, coverage: higher; sharpness (Laplacian variance): closest to ``sharpness_real``.
    ``progress`` shows the feature classifier's training (the slow part, once per process)."""
    classifier, accuracy = feature_classifier(dataset, seed=seed, device=device, progress=progress)
    report = quality_report(samples.detach().to(device), unit_images(dataset, "train").to(device),
                            unit_images(dataset, "test").to(device), classifier, seed=seed)
    out = {"n_samples": report["n_samples"], "feature_classifier_accuracy": accuracy}
    for name, (group, field) in QUALITY_KEYS.items():
        for who, suffix in (("samples", ""), ("ceiling", "_real")):
            value = report[group][who]
            out[name + suffix] = value[field] if field else value
    return out


@torch.no_grad()
def code_mig(guide, dataset) -> float | None:
    """MIG of the posterior means E_q[z|x] on the test split against the ground-truth factors,
    or None where the data have no factor matrix ``[N, K>1]`` or the run no guide."""
    factors = (dataset.labels or {}).get("test")
    if guide is None or factors is None or factors.dim() != 2 \
            or factors.shape[1] < 2:
        return None
    with eval_mode(guide):
        codes = posterior_mean(guide, dataset.test.to(next(guide.parameters()).device))
    return mutual_information_gap(codes, factors)["mig"]


@torch.no_grad()
def unit_samples(model, n: int) -> torch.Tensor:
    """``n`` samples of a trained generative model on the unit scale: the means of p(x|z),
    z ~ p(z), divided by the likelihood's input scale for the VAE family; the generator's
    outputs (already in [0, 1]) for the GAN."""
    if not isinstance(model, Samples):
        raise ValueError(f"{type(model).__name__} is not a generative model (it has no sample()); "
                         "sample quality applies to vae, conv_vae, sparse_vae, vaegan and gan runs")
    scale = getattr(getattr(model, "likelihood", None), "input_scale", 1.0)
    return (model.sample(n) / scale).clamp(0, 1)
