"""``ppgen.report``: the diagnostics report of a run directory (``ppgen report DIR``,
``ppgen.report(DIR)``) or of any trained pair (``ppgen.report(model, guide, data, out=...)``)."""
from __future__ import annotations

import json
import time
from pathlib import Path

from ..data.base import first_rows
from ..diagnostics.report import IMPORTANCE_DRAWS, Report, diagnose, write_report
from ..infer.arguments import positive_int
from ..infer.checkpoint import load_checkpoint
from .api import load_run
from .files import check_output_file, check_writable, read_json
from .lock import hold
from .vae import decoder_of


def report(target, guide=None, data=None, *, out="report.html", fit_data=None, num_samples: int | None = None,
           importance_samples: int | None = None, max_obs: int | None = None, device: str = "cpu",
           seed: int = 0, history=None, title: str | None = None) -> Report:
    """The diagnostics report, shown inline in a notebook (the returned :class:`Report`).

    * ``report(run_dir)``: the run in ``run_dir`` on its test split; writes ``report.html``
      and ``posterior.nc`` there (``out`` is not used).
    * ``report(model, guide, data, out="report.html")``: any trained pair (built-in or your
      own Pyro program) on held-out ``data`` (a tensor or a tuple of the model's arguments);
      writes ``out`` and the InferenceData beside it (``report.nc``). ``history`` (what
      :func:`ppgen.fit` returned) adds the training curves. For a model with global latents
      pass ``fit_data``, the data the guide was trained on (it may be ``data`` itself): the
      verdict on the globals is their joint k-hat there, the posterior q approximates.

    ``num_samples``: guide draws kept per datapoint (default 100, fewer for long sequences);
    ``importance_samples``: draws per datapoint for k-hat and log p(x) (default: a run's
    ``iwae_k`` in metrics.json, so that the report's and posterior.nc's log p(x) are the
    numbers metrics.json holds; 1000 for a pair); ``max_obs``: use only the first datapoints
    (faster)."""
    max_obs = positive_int(max_obs, "max_obs", optional=True)  # None: all datapoints
    num_samples = positive_int(num_samples, "num_samples", optional=True)
    importance_samples = positive_int(importance_samples, "importance_samples", optional=True)
    if guide is None and data is None:
        return _run_report(target, num_samples, importance_samples, max_obs, device, seed)
    if guide is None or data is None:
        raise TypeError("ppgen.report takes a run directory, report(run_dir), or a trained pair and held-out data, "
                        "report(model, guide, data, out='report.html')")
    start = time.perf_counter()
    out = Path(out)
    check_output_file(out if out.suffix.lower() in (".html", ".htm") else out / "report.html", force=True)  # replaced by design
    ctx = diagnose(target, guide, first_rows(data, max_obs), fit_data=fit_data, num_samples=num_samples,
                   importance_samples=importance_samples or IMPORTANCE_DRAWS, history=history, seed=seed, **decoder_of(target))
    name = getattr(target, "__name__", type(target).__name__)
    return write_report(ctx, out, title or f"ppgen report: {name}", subtitle=str(out), started=start)


def _run_report(run_dir, num_samples, importance_samples, max_obs, device, seed) -> Report:
    start = time.perf_counter()
    run_dir = Path(run_dir)
    if not (run_dir / "checkpoint.pt").is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no checkpoint.pt); for a pair you trained "
                                "yourself call ppgen.report(model, guide, data, out='report.html')")
    check_writable(run_dir)  # before the computing
    with hold(run_dir):  # one writer per run folder
        return _locked_run_report(run_dir, num_samples, importance_samples, max_obs, device, seed, start)


def _locked_run_report(run_dir, num_samples, importance_samples, max_obs, device, seed, start) -> Report:
    model, guide, dataset, config = load_run(run_dir, device)
    history = load_checkpoint(run_dir / "checkpoint.pt").get("history")
    metrics = read_json(run_dir / "metrics.json") if (run_dir / "metrics.json").is_file() else {}
    test = first_rows(dataset.test, max_obs)
    importance_samples = importance_samples or int(metrics.get("iwae_k", IMPORTANCE_DRAWS))
    ctx = diagnose(model, guide, test, num_samples=num_samples, importance_samples=importance_samples,
                   history=history, seed=seed, attrs={"run_dir": str(run_dir), "config": json.dumps(config)},
                   **decoder_of(model))
    ctx.update(dataset=dataset, config=config, metrics=metrics)
    title = f"ppgen report: {config.get('model', type(model).__name__)} on {config.get('data', dataset.name)}"
    return write_report(ctx, run_dir, title, subtitle=str(run_dir), started=start)

