"""Sample quality of trained runs on one dataset, side by side (``ppgen quality``): one row
per run of :func:`ppgen.companions.sample_quality.sample_quality` on common features, the
real-data ceilings, and a figure of each run's samples."""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from .. import data as data_mod
from ..companions.sample_quality import code_mig, sample_quality, unit_images, unit_samples
from ..figures.images import image_grid, plt
from .api import load_run
from .files import read_json

#: columns of the comparison table: (key, header)
COLUMNS = [("fid", "FID"), ("kid", "KID"), ("precision", "precision"), ("recall", "recall"),
           ("density", "density"), ("coverage", "coverage"), ("sharpness", "sharpness"),
           ("nn_train_distance", "NN-train dist"), ("mig", "MIG"), ("test_elbo_nats", "test ELBO"),
           ("test_iwae_nats", "test log p(x) IWAE")]


def compare_runs(run_dirs, data: str, *, n_samples: int | None = None, device: str = "cpu", seed: int = 0) -> dict:
    """Quality of every run in ``run_dirs`` (all trained on ``data``) on common features.

    Returns ``{"data", "n_samples", "rows", "real", "samples", "image_shape"}``: one row per run
    (``run``, ``model``, the metrics of :func:`sample_quality`, ``mig``, test ELBO / IWAE
    from its metrics.json where present), the real-data ceilings, and each run's first
    samples for the figure."""
    if not run_dirs:
        raise ValueError("give at least one run directory")
    dataset = data_mod.load_vectors(data)
    unit_images(dataset, "test")  # image data on a [0, 1] scale, or a clear error before any run is loaded
    n = n_samples or dataset.test.shape[0]
    rows, samples, real = [], {}, None
    for run_dir in map(Path, run_dirs):
        model, guide, run_data, config = load_run(run_dir, device)
        trained = config.get("data")
        if trained is None or data_mod.resolve_spec(trained) != data_mod.resolve_spec(data):  # a relative path, resolved
            raise ValueError(f"run {run_dir} was trained on {trained!r}, not {data_mod.resolve_spec(data)!r}; "
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


def comparison_paths(out) -> dict:
    """The files :func:`write_comparison` writes for ``out``: the Markdown table (suffix .md
    added if missing) and, beside it, ``.json`` and ``.png`` (the CLI checks them all first)."""
    out = Path(out)
    md = out if out.suffix == ".md" else out.with_name(out.name + ".md")
    return {"markdown": md, "json": md.with_suffix(".json"), "figure": md.with_suffix(".png")}


def write_comparison(result: dict, out) -> dict:
    """Write ``out`` as Markdown (suffix .md added if missing), and beside it ``.json``
    (the rows and ceilings) and ``.png`` (data and each run's samples side by side)."""
    paths = comparison_paths(out)
    paths["markdown"].parent.mkdir(parents=True, exist_ok=True)
    paths["markdown"].write_text(markdown_table(result))
    paths["json"].write_text(json.dumps({k: result[k] for k in ("data", "n_samples", "rows", "real")}, indent=2) + "\n")
    samples_figure(result["samples"], result["image_shape"]).savefig(paths["figure"], dpi=110)
    return paths


def samples_figure(panels: dict, image_shape, per_row: int = 4):
    """One panel of 32 images per named set (data first, then each run), ``per_row`` panels
    to a row so that many runs stay legible."""
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
