"""``ppgen.compare``: two or more fits of the same data, datapoint by datapoint.

What ``az.compare`` does for MCMC fits, for fits whose latents are all local (a VAE's q(z | x)
is amortized and its networks are point estimates, so there is nothing to leave out but x_i
itself and elpd_i = log p(x_i)): each fit's importance-sampled log p(x_i) per datapoint (the
``log_px`` of :func:`ppgen.diagnostics.importance_diagnostics`, for global latents the
predictive density log E_q(theta) p(x_i | theta)), summed, and the differences to the best fit
with the standard error of the *paired* per-datapoint differences (Vehtari et al., 2017):
the fits share the datapoints, and most of the spread of log p(x_i) is the datapoints', not
the fits'. Beside them, the share of datapoints in each k-hat band says how far each fit's
numbers can be trusted.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from .report import Report
from .vi import dims_of, is_inference_data, khat_bands


def compare(*fits, names=None) -> pd.DataFrame:
    """One row per fit, the best (highest summed log p(x_i)) first:

    * ``elpd``: sum over datapoints of log p(x_i), nats; ``se`` its standard error across
      datapoints; ``log_px_mean``: per datapoint;
    * ``elpd_diff``: the best fit's ``elpd`` minus this one's (0 for the best); ``dse``: the
      standard error of that difference from the paired per-datapoint differences;
    * ``khat_good``, ``khat_ok``, ``khat_bad``: shares of datapoints with PSIS k-hat < 0.5,
      0.5-0.7, > 0.7 (where k-hat > 0.7 the fit's log p(x_i) is not to be trusted);
    * ``K`` (importance draws per datapoint) and ``n`` (datapoints).

    Each fit is a run directory or report written by ``ppgen report`` (its ``posterior.nc``),
    a ``.nc`` file, an InferenceData with the group ``vi_diagnostics`` (as ``ppgen.report``
    returns it in ``Report.posterior_path``) or the Dataset of
    :func:`~ppgen.diagnostics.importance_diagnostics`. All must be on the same datapoints
    (checked on their observed data where the files hold it). ``names`` label the rows
    (default: the folder or file names, else ``fit0``, ``fit1``, ...)."""
    if len(fits) < 2:
        raise ValueError(f"compare takes two or more fits, got {len(fits)}")
    names = list(names) if names is not None else [_default_name(f, i) for i, f in enumerate(fits)]
    if len(names) != len(fits) or len(set(names)) != len(names):
        raise ValueError(f"names must be {len(fits)} distinct labels, got {names}")
    loaded = [_diagnostics(f) for f in fits]
    first_diag, first_obs = loaded[0]
    n = first_diag["log_px"].size
    for name, (diag, observed) in zip(names[1:], loaded[1:]):
        if diag["log_px"].size != n:
            raise ValueError(f"{names[0]} has {n} datapoints and {name} {diag['log_px'].size}: compare fits of the "
                             "same data")
        if first_obs is not None and observed is not None and not _same(first_obs, observed):
            raise ValueError(f"{names[0]} and {name} were evaluated on different data: compare fits of the same data")
    pointwise = np.stack([d["log_px"].values.astype(np.float64) for d, _ in loaded])  # [fits, n]
    elpd = pointwise.sum(1)
    best = int(np.argmax(elpd))
    rows = []
    for i, (name, (diag, _)) in enumerate(zip(names, loaded)):
        diff = pointwise[best] - pointwise[i]
        bands = khat_bands(diag["khat"].values)
        rows.append({"fit": name, "elpd": elpd[i], "se": math.sqrt(n * np.var(pointwise[i])),
                     "log_px_mean": elpd[i] / n, "elpd_diff": elpd[best] - elpd[i],
                     "dse": math.sqrt(n * np.var(diff)) if i != best else 0.0,
                     "khat_good": bands["good"], "khat_ok": bands["ok"], "khat_bad": bands["bad"],
                     "K": int(diag.attrs.get("num_samples", 0)), "n": n})
    return pd.DataFrame(rows).set_index("fit").sort_values("elpd", ascending=False)


def _diagnostics(fit) -> tuple[xr.Dataset, np.ndarray | None]:
    """(the fit's per-datapoint diagnostics, its observed data or None)."""
    if isinstance(fit, xr.Dataset):
        _require(fit, "the Dataset")
        return fit, None
    if is_inference_data(fit):
        if "vi_diagnostics" not in fit.groups():
            raise ValueError("the InferenceData has no vi_diagnostics group: compare fits through ppgen.report "
                             "(its posterior file) or pass ppgen.diagnostics.importance_diagnostics(...) of each")
        return _require(fit["vi_diagnostics"], "the InferenceData"), _observed(fit["observed_data"]) \
            if "observed_data" in fit.groups() else None
    path = Path(fit.posterior_path if isinstance(fit, Report) else fit)
    if path.is_dir():
        path = path / "posterior.nc"
        if not path.is_file():
            raise FileNotFoundError(f"{path.parent} has no posterior.nc: run `ppgen report {path.parent}` first")
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (a run directory, a report's .nc file or an InferenceData)")
    try:
        with xr.open_dataset(path, group="vi_diagnostics") as ds:
            diag = _require(ds.load(), str(path))
    except OSError as e:
        raise ValueError(f"{path} has no vi_diagnostics group ({e}): compare files written by ppgen report") from None
    try:
        with xr.open_dataset(path, group="observed_data") as ds:
            observed = _observed(ds.load())
    except OSError:
        observed = None
    return diag, observed


def _require(diag: xr.Dataset, what: str) -> xr.Dataset:
    missing = [v for v in ("log_px", "khat") if v not in diag]
    if missing:
        raise ValueError(f"{what} lacks {missing}: pass what ppgen.diagnostics.importance_diagnostics returns")
    if list(diag["log_px"].dims) != [dims_of(diag).datapoint]:
        raise ValueError(f"{what}: log_px must be one value per datapoint, has dims {list(diag['log_px'].dims)}")
    return diag


def _observed(ds: xr.Dataset) -> np.ndarray | None:
    return np.concatenate([np.ravel(v.values).astype(np.float64) for v in ds.data_vars.values()]) if ds.data_vars else None


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=True))


def _default_name(fit, i: int) -> str:
    if not isinstance(fit, (str, Path, Report)):
        return f"fit{i}"
    path = Path(fit.posterior_path if isinstance(fit, Report) else fit)
    return path.parent.name if path.name == "posterior.nc" else path.stem if path.suffix == ".nc" else path.name


__all__ = ["compare"]
