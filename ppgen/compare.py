"""Sample quality of trained runs on one dataset, side by side (``ppgen quality``).

Every model family is judged on the same footing: ``n`` samples on the unit scale [0, 1]
(means of p(x|z) for the VAE family, generator outputs for the GAN) scored by
:func:`ppgen.quality.quality_report` against the held-out test split, in the feature space
of one :class:`ppgen.quality.FeatureClassifier` trained on the dataset's labels (digit
classes) or generative factors (sprites). Each metric comes with its value for real data
(a same-sized subset of the training split), what a perfect model would score. Where a run
has an encoder and the data have ground-truth factors, the mutual information gap (MIG) of
its posterior means is reported too, and its test ELBO / IWAE from ``metrics.json``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from . import likelihoods
from .evaluate import posterior_mean
from .nn import eval_mode
from .quality import mutual_information_gap, quality_report, train_feature_classifier

#: the flat metric names, read off quality_report's nested dict (lower-is-better ones marked)
QUALITY_KEYS = {
    "fid": ("fid", None), "kid": ("kid", "mean"), "precision": ("prdc", "precision"), "recall": ("prdc", "recall"),
    "density": ("prdc", "density"), "coverage": ("prdc", "coverage"), "sharpness": ("laplacian_variance", None),
    "nn_train_distance": ("memorisation", "median"),
}
#: columns of the comparison table: (key, header)
COLUMNS = [("fid", "FID"), ("kid", "KID"), ("precision", "precision"), ("recall", "recall"),
           ("density", "density"), ("coverage", "coverage"), ("sharpness", "sharpness"),
           ("nn_train_distance", "NN-train dist"), ("mig", "MIG"), ("test_elbo_nats", "test ELBO"),
           ("test_iwae_nats", "test log p(x) IWAE")]

_CLASSIFIERS: dict = {}


def unit_scale(dataset) -> float:
    """What the dataset's values are divided by to lie in [0, 1] (16 for the digits counts)."""
    lik = likelihoods.LIKELIHOODS[dataset.likelihood](dataset.x_dim, **dataset.likelihood_kwargs)
    return float(lik.input_scale)


def unit_images(dataset, split: str) -> torch.Tensor:
    """A split of an image dataset on the unit scale, checked: flat ``[N, C*H*W]`` in [0, 1]."""
    from .loops import check_images

    if dataset.image_shape is None:
        raise ValueError(f"dataset {dataset.name!r} has no image_shape; sample quality needs images")
    return check_images(getattr(dataset, split) / unit_scale(dataset), dataset.image_shape, f"{split} images")


def classifier_epochs(n_train: int, batch_size: int = 128, min_steps: int = 600) -> int:
    """At least 5 epochs and about ``min_steps`` optimiser steps (small sets get more epochs)."""
    return max(5, math.ceil(min_steps / math.ceil(n_train / batch_size)))


def feature_classifier(dataset, *, seed: int = 0, device="cpu"):
    """``(classifier, held-out accuracy)`` trained on the training split's labels, seeded, and
    cached per dataset within the process (so runs compared together share one feature space)."""
    if not dataset.labels or "train" not in dataset.labels:
        raise ValueError(f"dataset {dataset.name!r} has no labels; the quality features need labels or factors "
                         "(digits, sprites)")
    key = (dataset.name, tuple(dataset.train.shape), seed, str(device))
    if key not in _CLASSIFIERS:
        train = unit_images(dataset, "train")
        _CLASSIFIERS[key] = train_feature_classifier(train, dataset.labels["train"].cpu(), dataset.image_shape,
                                                     epochs=classifier_epochs(train.shape[0]), device=device, seed=seed)
    return _CLASSIFIERS[key]


def sample_quality(samples: torch.Tensor, dataset, *, seed: int = 0, device="cpu") -> dict:
    """Flat quality metrics of unit-scale ``samples`` against the test split: ``<metric>`` for
    the samples and ``<metric>_real`` for real data (the ceiling), plus the classifier's
    held-out accuracy. FID, KID and NN-train distance: lower is better; precision, recall,
    density, coverage: higher; sharpness (Laplacian variance): closest to ``sharpness_real``."""
    classifier, accuracy = feature_classifier(dataset, seed=seed, device=device)
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
    or None where the data have no factor matrix ``[N, K>1]`` or the guide no encoder."""
    factors = (dataset.labels or {}).get("test")
    if guide is None or not hasattr(guide, "posterior") or factors is None or factors.dim() != 2 \
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
    if not hasattr(model, "sample"):
        raise ValueError(f"{type(model).__name__} is not a generative model (it has no sample()); "
                         "sample quality applies to vae, conv_vae, sparse_vae, vaegan and gan runs")
    scale = getattr(getattr(model, "likelihood", None), "input_scale", 1.0)
    return (model.sample(n) / scale).clamp(0, 1)


def compare_runs(run_dirs, data: str, *, n_samples: int | None = None, device: str = "cpu", seed: int = 0) -> dict:
    """Quality of every run in ``run_dirs`` (all trained on ``data``) on common features.

    Returns ``{"data", "n_samples", "rows", "real", "samples", "image_shape"}``: one row per run
    (``run``, ``model``, the metrics of :func:`sample_quality`, ``mig``, test ELBO / IWAE
    from its metrics.json where present), the real-data ceilings, and each run's first
    samples for the figure."""
    from . import data as data_mod
    from .runs import load_run, read_json

    if not run_dirs:
        raise ValueError("give at least one run directory")
    dataset = data_mod.load(data)
    unit_images(dataset, "test")  # image data on a [0, 1] scale, or a clear error before any run is loaded
    n = n_samples or dataset.test.shape[0]
    rows, samples, real = [], {}, None
    for run_dir in map(Path, run_dirs):
        model, guide, run_data, config = load_run(run_dir, device)
        if config.get("data") != data:
            raise ValueError(f"run {run_dir} was trained on {config.get('data')!r}, not {data!r}; "
                             "compare runs on the same data")
        torch.manual_seed(seed)
        x = unit_samples(model, n)
        quality = sample_quality(x, dataset, seed=seed, device=device)
        saved = read_json(run_dir / "metrics.json") if (run_dir / "metrics.json").exists() else {}
        row = {"run": _label(run_dir, run_dirs), "model": config["model"],
               **{k: v for k, v in quality.items() if not k.endswith("_real")},
               "mig": code_mig(guide, run_data),
               **{k: saved.get(k) for k in ("test_elbo_nats", "test_iwae_nats", "iwae_k")}}
        rows.append(row)
        real = {k[:-5]: v for k, v in quality.items() if k.endswith("_real")}
        samples[row["run"]] = x[:32].cpu()
    samples = {"data (test)": unit_images(dataset, "test")[:32], **samples}
    return {"data": data, "n_samples": n, "rows": rows, "real": real, "samples": samples,
            "image_shape": dataset.image_shape}


def markdown_table(result: dict) -> str:
    """The comparison as a Markdown table, with a last row for real data (the ceilings)."""
    head = ["run", "model", *(h for _, h in COLUMNS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in result["rows"]:
        lines.append("| " + " | ".join([row["run"], row["model"], *(_fmt(row.get(k)) for k, _ in COLUMNS)]) + " |")
    real = result["real"] or {}
    lines.append("| real data (ceiling) | - | " + " | ".join(_fmt(real.get(k)) for k, _ in COLUMNS) + " |")
    note = (f"\n{result['n_samples']} samples per run against the {result['data']} test split; features of a "
            "classifier trained on the training labels. Lower is better for FID, KID; higher for precision, recall, "
            "density, coverage, MIG, ELBO and log p(x) (nats per image); sharpness should match real data.\n")
    return "\n".join(lines) + "\n" + note


def write_comparison(result: dict, out) -> dict:
    """Write ``out`` as Markdown (suffix .md added if missing), and beside it ``.json``
    (the rows and ceilings) and ``.png`` (data and each run's samples side by side)."""
    out = Path(out)
    md = out if out.suffix == ".md" else out.with_name(out.name + ".md")
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text(markdown_table(result))
    js = md.with_suffix(".json")
    js.write_text(json.dumps({k: result[k] for k in ("data", "n_samples", "rows", "real")}, indent=2) + "\n")
    png = md.with_suffix(".png")
    samples_figure(result["samples"], result["image_shape"]).savefig(png, dpi=110)
    return {"markdown": md, "json": js, "figure": png}


def samples_figure(panels: dict, image_shape, per_row: int = 4):
    """One panel of 32 images per named set (data first, then each run), ``per_row`` panels
    to a row so that many runs stay legible."""
    from .plots import image_grid, plt

    rows = math.ceil(len(panels) / per_row)
    fig, axes = plt.subplots(rows, per_row, figsize=(3.4 * per_row, 2.0 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (title, images) in zip(axes.flat, panels.items()):
        ax.imshow(image_grid(images[:32], image_shape, ncol=8), cmap="gray_r", interpolation="nearest")
        ax.set_title(title)
    fig.tight_layout()
    return fig


def _label(run_dir: Path, run_dirs) -> str:
    names = [Path(d).name for d in run_dirs]
    return run_dir.name if names.count(run_dir.name) == 1 else str(run_dir)


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)
