"""The diagnostics report of a run directory (``ppgen report DIR``, ``ppgen.report(DIR)``)."""
from __future__ import annotations

import json
import time
from pathlib import Path

from ..diagnostics.report import IMPORTANCE_DRAWS, Report, diagnose, write_report
from ..infer.checkpoint import load_checkpoint
from ..models import VAE
from .api import load_run
from .files import read_json


def report(run_dir, *, num_samples: int | None = None, importance_samples: int = IMPORTANCE_DRAWS,
           max_obs: int | None = None, device: str = "cpu", seed: int = 0) -> Report:
    """Diagnose the run in ``run_dir`` on its test split and write ``report.html`` and
    ``posterior.nc`` there. ``num_samples``: guide draws kept per datapoint (default 100,
    fewer for long sequences); ``importance_samples``: draws per datapoint for k-hat and
    log p(x); ``max_obs``: use only the first test datapoints (faster)."""
    start = time.perf_counter()
    run_dir = Path(run_dir)
    model, guide, dataset, config = load_run(run_dir, device)
    history = load_checkpoint(run_dir / "checkpoint.pt").get("history")
    metrics = read_json(run_dir / "metrics.json") if (run_dir / "metrics.json").is_file() else {}
    test = _first(dataset.test, max_obs)
    ctx = diagnose(model, guide, test, num_samples=num_samples, importance_samples=importance_samples,
                   history=history, seed=seed, attrs={"run_dir": str(run_dir), "config": json.dumps(config)},
                   decode_mean=decode_mean(model))
    ctx.update(dataset=dataset, config=config, metrics=metrics)
    title = f"ppgen report: {config.get('model', type(model).__name__)} on {config.get('data', dataset.name)}"
    return write_report(ctx, run_dir, title, subtitle=str(run_dir), started=start)


def decode_mean(model):
    """z -> mean of p(x | z) for the VAE family (its decoder and likelihood); None for others."""
    if not isinstance(model, VAE):
        return None
    return lambda z: model.likelihood.mean(model.decoder(z))


def _first(data, n: int | None):
    if n is None:
        return data
    return tuple(t[:n] for t in data) if isinstance(data, (tuple, list)) else data[:n]
