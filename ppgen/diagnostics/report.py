"""The diagnostics report: did the variational fit work, and what does it say?

:func:`diagnose` computes what the page shows for a model/guide pair on held-out data;
:func:`write_report` writes ``report.html``, one self-contained page (every figure embedded
as a PNG data URI, no scripts, no external resources), and ``posterior.nc``, the ArviZ
InferenceData behind it (with the groups ``vi_diagnostics`` and ``latent_kl`` added). In a
notebook the returned :class:`Report` displays inline. ``ppgen.report(run_dir)`` and
``ppgen.report(model, guide, data, out="report.html")`` (:mod:`ppgen.runs.report`) do both.
"""
from __future__ import annotations

import base64
import html
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pyro
import torch

from ..data.base import first_rows, model_args
from ..data.midi import KEYS
from ..evaluate import latents
from ..evaluate.latents import has_sparse_prior
from ..figures.images import image_grid, show_images
from ..infer.checkpoint import atomic_write
from ..figures.piano_rolls import plot_piano_rolls
from ..models.interfaces import Samples
from . import vi as D

#: default draws per datapoint: posterior/predictive arrays (capped by size for sequences)
#: and importance samples for k-hat (K >= ~200 for a stable Pareto fit; 1000 is comfortable)
POSTERIOR_DRAWS, IMPORTANCE_DRAWS = 100, 1000


@dataclass
class Report:
    """A written report: ``html`` is the page body, shown inline by Jupyter."""

    html: str
    path: Path
    posterior_path: Path
    seconds: float

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        return f"Report({str(self.path)!r}, posterior={str(self.posterior_path)!r}, {self.seconds:.1f} s)"


def diagnose(model, guide, data, *, fit_data=None, num_samples: int | None = None,
             importance_samples: int = IMPORTANCE_DRAWS, history=None, seed: int = 0, attrs: dict | None = None,
             decode_mean=None, code: str | None = None) -> dict:
    """Everything the report shows for ``data`` (held out, or the training data): the
    InferenceData of ``num_samples`` guide draws per datapoint (default 100, fewer for long
    sequences) with the groups ``vi_diagnostics`` (k-hat, log p(x), gap per datapoint, from
    ``importance_samples`` draws) and ``latent_kl`` added, and those two datasets. For a model
    with global latents, ``fit_data`` (the data the guide was trained on) is where their joint
    k-hat is computed (:func:`ppgen.diagnostics.importance_diagnostics`).

    ``decode_mean(z)``, where the model has one, maps codes ``[..., z_dim]`` to the mean of
    p(x | z) (on the data's scale); it draws the reconstructions and latent traversals, which
    are left out without it. ``code`` names the posterior variable it reads (the one code
    variable by default; a hierarchy's ``z1``, the layer p(x | z_1) conditions on)."""
    # what can fail on the structure of the pair (shapes, plates, names) fails here, on two
    # datapoints and two draws, before the draws that take the time
    with latents.keep_rng(model_args(data)):
        D.to_inference_data(model, guide, first_rows(data, 2), 2)
    torch.manual_seed(seed)
    pyro.set_rng_seed(seed)
    idata = D.to_inference_data(model, guide, data, num_samples or _posterior_draws(data), history=history,
                                attrs=attrs)
    dims = D.dims_of(idata)
    diag = D.importance_diagnostics(model, guide, data, importance_samples, fit_data=fit_data, dims=dims)
    kl = D.latent_kl(model, guide, data, dims=dims)
    idata.add_groups({"vi_diagnostics": diag, "latent_kl": kl})
    return {"model": model, "guide": guide, "idata": idata, "diag": diag, "kl": kl, "decode_mean": decode_mean,
            "code": code}


def write_report(ctx: dict, out, title: str, subtitle: str = "", *, started: float | None = None) -> Report:
    """Write the report of a :func:`diagnose` context (plus ``config``, ``metrics`` and
    ``dataset`` where known): ``out`` is a directory (``out/report.html`` and
    ``out/posterior.nc``) or an ``.html`` path (the InferenceData beside it, as ``.nc``)."""
    started = time.perf_counter() if started is None else started
    out = Path(out)
    if out.suffix.lower() in (".html", ".htm"):
        path, posterior_path = out, out.with_suffix(".nc")
    else:
        path, posterior_path = out / "report.html", out / "posterior.nc"
    path.parent.mkdir(parents=True, exist_ok=True)
    ctx["posterior_name"] = posterior_path.name
    sections = [s for s in (build(ctx) for build in SECTIONS) if s is not None]
    body = render(title, sections, subtitle=subtitle)
    # both files are written only once everything is computed, each atomically: a failed
    # report leaves the previous one as it was
    D.write_netcdf(ctx["idata"], posterior_path)
    atomic_write(path, lambda f: f.write(page(title, body)), mode="w")
    return Report(body, path, posterior_path, time.perf_counter() - started)


# -- sections: each takes the context and returns (id, title, html) or None -------------------

def config_section(ctx):
    if not ctx.get("config"):
        return None  # a pair trained outside a run directory has no saved configuration
    rows = [(k, json.dumps(v) if not isinstance(v, str) else v) for k, v in ctx["config"].items()]
    return "config", "Configuration", table(["setting", "value"], rows)


def training_section(ctx):
    if "training" not in ctx["idata"].groups():
        return None
    training = ctx["idata"].training
    text = (f"<p>{training.sizes.get('epoch', 0)} epochs, {training.sizes.get('step', 0)} steps, "
            f"{float(training['seconds'].sum()) if 'seconds' in training else 0:.0f} s of training. "
            "ELBO per datapoint in nats (higher is better); the step curve is the minibatch ELBO at that step's "
            "KL weight.</p>")
    return "training", "Training curves", text + figure(D.plot_training(training), "ELBO per epoch and per step")


def numbers_section(ctx):
    rows = bound_rows(ctx["diag"]) + frame_rows(ctx["diag"], ctx["idata"]) + latent_rows(ctx)
    split = "test split" if ctx.get("dataset") is not None else "the data given"  # a run directory knows its split
    return "numbers", f"The numbers ({split})", table(["quantity", "value"], rows) + recorded_note(ctx.get("metrics", {}))


def bound_rows(diag) -> list:
    """ELBO, importance-sampled log p(x) with the standard error of its mean, and the gap;
    for global latents the local part given draws of the globals, and the globals' k-hat."""
    n, k = diag.sizes[D.dims_of(diag).datapoint], diag.attrs["num_samples"]
    se_of_mean = float(np.sqrt((diag["log_px_se"] ** 2).sum())) / n
    if diag.attrs.get("global_latents"):
        return [(f"global latents ({diag.attrs['global_latents']}): joint k-hat of p(theta, z, y) / q(theta, z) "
                 "on the training data", diag.attrs.get("global_khat_note") or _khat_text(diag.attrs["global_khat"])),
                ("mean local log-weight log p(y_n, z | theta) - log q(z | theta) per datapoint",
                 f"{float(diag['elbo'].mean()):.3f} nats"),
                (f"predictive density log E_q(theta) p(y_n | theta) per datapoint (K={k})",
                 f"{float(diag['log_px'].mean()):.3f} ± {se_of_mean:.3f} nats")]
    return [("test ELBO per datapoint", f"{float(diag['elbo'].mean()):.3f} nats"),
            (f"importance-sampled log p(x) per datapoint (IWAE, K={k})",
             f"{float(diag['log_px'].mean()):.3f} ± {se_of_mean:.3f} nats"),
            ("ELBO gap log p(x) - ELBO (mean, median)",
             f"{float(diag['gap'].mean()):.3f}, {float(diag['gap'].median()):.3f} nats")]


def frame_rows(diag, idata) -> list:
    """Per-frame versions for sequences (the unit the music literature reports)."""
    frames = frames_per_datapoint(idata)
    if frames is None:
        return []
    total = float(frames.sum())
    return [("test ELBO per frame", f"{float(diag['elbo'].sum()) / total:.4f} nats"),
            ("importance-sampled log p(x) per frame", f"{float(diag['log_px'].sum()) / total:.4f} nats")]


def latent_rows(ctx) -> list:
    """KL per datapoint, active units and (for sparse models) code sparsity."""
    kl, idata, rows = ctx["kl"], ctx["idata"], []
    dims, kl_dims = D.dims_of(idata), D.dims_of(kl)
    for name in kl.data_vars:
        if not name.endswith("_per_dim"):
            per_datapoint = kl[name].sum([d for d in kl[name].dims if d != kl_dims.datapoint])
            rows.append((f"KL(q || p) of {name} per datapoint", f"{float(per_datapoint.mean()):.3f} nats"))
    for name, var in idata.posterior.data_vars.items():
        if dims.datapoint not in var.dims or not D.latent_dim(var, dims):
            continue
        rows.append((f"active units of {name} (Cov_x E_q[z|x] > 0.01, from the draws)",
                     f"{D.active_units(idata, name)} of {var.sizes[D.latent_dim(var, dims)]}"))
        if has_sparse_prior(ctx["model"]):
            rows.append((f"code sparsity of {name} (share of |z| <= 0.01)", f"{D.code_sparsity(idata, name):.3f}"))
    return rows


def recorded_note(metrics: dict) -> str:
    saved = {k: v for k, v in metrics.items() if k.startswith("test_") or k == "active_units"}
    if not saved:
        return ""
    values = ", ".join(f"{k} = {v:.3f}" if isinstance(v, float) else f"{k} = {v}" for k, v in saved.items())
    return f"<p>Recorded at training time (metrics.json): {html.escape(values)}.</p>"


def verdict_section(ctx):
    diag = ctx["diag"]
    bands = D.khat_bands(diag["khat"])
    datapoint = D.dims_of(diag).datapoint
    n = diag.sizes[datapoint]
    rows = [("k-hat < 0.5", "good: q is a reliable importance proposal", bands["good"]),
            ("0.5 ≤ k-hat ≤ 0.7", "usable: importance sampling still corrects q, slowly", bands["ok"]),
            ("k-hat > 0.7", "bad: q is not trustworthy for these datapoints", bands["bad"])]
    band_table = table(["band", "meaning", "share of datapoints"],
                       [(a, b, f"{share:.1%} ({round(share * n)})") for a, b, share in rows])
    worst = D.worst_datapoints(diag, 8)
    worst_table = table(["datapoint", "k-hat", "log p(x) ± se", "ELBO", "gap"], [
        (int(o), _khat_text(k), f"{lp:.2f} ± {se:.2f}", f"{e:.2f}", f"{g:.2f}")
        for o, k, lp, se, e, g in zip(worst[datapoint].values, worst["khat"].values, worst["log_px"].values,
                                      worst["log_px_se"].values, worst["elbo"].values, worst["gap"].values)])
    pictures = worst_datapoint_images(ctx, worst[datapoint].values)
    return ("verdict", "Verdict: is the guide trustworthy?",
            f"<p>{html.escape(global_sentence(diag) + verdict_sentence(bands))}</p>" + band_table
            + "<h3>The worst datapoints</h3>" + worst_table + pictures)


def khat_section(ctx):
    text = ("<p>Each point is one datapoint: the Pareto shape k-hat of its importance weights "
            "p(x, z) / q(z | x) (PSIS, Yao et al. 2018). Right: the ELBO gap, log p(x) - ELBO, which estimates "
            "KL(q(z|x) || p(z|x)). Standard errors of log p(x) are only meaningful where k-hat &lt; 0.7.</p>")
    if ctx["diag"].attrs.get("global_latents"):
        text = ("<p>The model has global latents theta, so each datapoint's weights are the local part "
                "p(y_n, z | theta) / q(z | y_n, theta) with (theta, z) drawn from q (PSIS k-hat, Yao et al. 2018); "
                "log p(x) is the predictive density E_q(theta) p(y_n | theta), and the globals are judged by the "
                "joint k-hat in the table above (on the data the guide was trained on). Standard errors are only meaningful where k-hat &lt; 0.7.</p>")
    return "khat", "PSIS k-hat per datapoint", text + figure(D.plot_khat(ctx["diag"]), "k-hat per datapoint")


def samples_section(ctx):
    images = image_panels(ctx)
    if images is not None:
        return "samples", "Reconstructions and samples", figure(images, "data, reconstructions, samples")
    rolls = piano_roll_panels(ctx)
    if rolls is not None:
        return "samples", "Reconstructions and samples", figure(rolls, "piano rolls")
    return None


def traversal_section(ctx):
    fig = latent_traversals(ctx)
    if fig is None:
        return None
    text = ("<p>Each row moves one latent dimension from -3 to 3 (the others at a test image's posterior mean) "
            "and shows the mean of p(x | z); rows are ordered by the dimension's activity, the most active first.</p>")
    return "traversals", "Latent traversals", text + figure(fig, "latent traversals")


def kl_section(ctx):
    kl = ctx["kl"]
    dims = D.dims_of(kl)
    if not any(D.latent_dim(v, dims) or dims.time in v.dims for v in kl.data_vars.values()):
        return None
    text = ("<p>Monte Carlo KL(q(z|x) || p(z)) averaged over the data. A dimension (or a time step) with KL near 0 "
            "for all data carries no information about x: posterior collapse shows up here. Per dimension, the KL "
            "is between per-dimension marginals.</p>")
    return "kl", "KL per dimension and per time step", text + figure(D.plot_kl(kl), "KL per dimension")


def ppc_section(ctx):
    text = ("<p>Test statistics T(x) of the observed data (black) against data replicated from "
            "p(x | z), z ~ q(z | x) (one curve per draw; ArviZ <code>plot_ppc</code>). Systematic offsets show what "
            "the model does not reproduce.</p>")
    return "ppc", "Posterior predictive checks", text + figure(D.plot_ppc(ctx["idata"]), "posterior predictive checks")


def notes_section(ctx):
    return "notes", "Notes", (
        "<p>Draws from a variational guide are independent, so R-hat and effective sample sizes are not "
        "convergence diagnostics here and are not shown. The guide's quality is judged by k-hat and the ELBO gap; "
        f"the ArviZ InferenceData behind this page is <code>{html.escape(ctx.get('posterior_name', 'posterior.nc'))}</code> "
        f"(groups: {html.escape(', '.join(ctx['idata'].groups()))}).</p>")


SECTIONS = (config_section, training_section, numbers_section, verdict_section, khat_section, samples_section,
            traversal_section, kl_section, ppc_section, notes_section)


def global_sentence(diag) -> str:
    """What the joint k-hat says about the global latents (empty for all-local models)."""
    if not diag.attrs.get("global_latents"):
        return ""
    k = diag.attrs["global_khat"]
    if np.isnan(k):
        return (f"The guide of the global latents ({diag.attrs['global_latents']}) was not judged: pass the data it "
                "was trained on as fit_data for their joint k-hat. ")
    if k > D.KHAT_BAD:
        return (f"The guide of the global latents ({diag.attrs['global_latents']}) is not trustworthy: their joint "
                f"k-hat is {k:.2f} (> 0.7). ")
    return f"The joint k-hat of the global latents ({diag.attrs['global_latents']}) is {_khat_text(k)}. "


def verdict_sentence(bands: dict) -> str:
    if bands["bad"] > 0.1:
        return (f"The guide is not trustworthy for {bands['bad']:.0%} of datapoints (k-hat > 0.7): their "
                "importance-sampled log p(x), standard errors and posterior summaries are unreliable. A richer guide "
                "(low-rank, IAF), longer training or an importance-weighted objective may help.")
    if bands["good"] + bands["ok"] >= 0.9 and bands["ok"] > bands["good"]:
        return ("Most datapoints are in the usable band (0.5-0.7): the guide is a workable importance proposal, "
                "but not close to the posterior; trust importance-sampled quantities more than the ELBO.")
    return (f"The guide is a good importance proposal for {bands['good']:.0%} of datapoints (k-hat < 0.5) "
            f"and usable for {bands['ok']:.0%}.")


# -- pictures -----------------------------------------------------------------------------------

def _decoder_mean(ctx, z: torch.Tensor) -> torch.Tensor | None:
    """Mean of p(x | z) by the context's ``decode_mean``; None where the model has none."""
    decode_mean = ctx.get("decode_mean")
    if decode_mean is None:
        return None
    with torch.no_grad():
        return decode_mean(z)


def _image_shape(ctx):
    shape = getattr(ctx.get("dataset"), "image_shape", None)
    return tuple(shape) if shape else None


def _code(ctx) -> str | None:
    """The code variable the decoder reads (the context's ``code``, else the posterior's one
    per-datapoint code variable), None where there is none or it has a time dim."""
    try:
        var = D.code_variable(ctx["idata"], ctx.get("code"))
    except ValueError:
        return None
    return None if D.dims_of(ctx["idata"]).time in ctx["idata"].posterior[var].dims else var


def _posterior_mean_z(ctx):
    var = _code(ctx)
    if var is None:
        return None
    return torch.as_tensor(ctx["idata"].posterior[var].mean(("chain", "draw")).values, dtype=torch.float32)


def image_panels(ctx, n: int = 16):
    shape, idata, model = _image_shape(ctx), ctx["idata"], ctx["model"]
    x = D.observed_variable(idata)
    if shape is None or x is None:
        return None
    panels = {"data": torch.as_tensor(idata.observed_data[x].values[:n])}
    code = _code(ctx)
    if code is not None and ctx.get("decode_mean") is not None:
        z = torch.as_tensor(idata.posterior[code].values[0, 0, :n], device=_device(model))
        recon = _decoder_mean(ctx, z)
        if recon is not None:
            panels["reconstructions (mean of p(x|z))"] = recon.cpu()
    panels["replicated x ~ p(x|z)"] = torch.as_tensor(idata.posterior_predictive[x].values[0, 0, :n])
    if isinstance(model, Samples):
        with torch.no_grad():
            panels["samples from p(x)"] = model.sample(n).cpu()
    return show_images(panels, shape, ncol=4)


def worst_datapoint_images(ctx, obs) -> str:
    shape, idata = _image_shape(ctx), ctx["idata"]
    x = D.observed_variable(idata)
    if shape is None or x is None:
        return ""
    index = [int(np.flatnonzero(idata.observed_data[D.dims_of(idata).datapoint].values == o)[0]) for o in obs]
    panels = {"worst datapoints": torch.as_tensor(idata.observed_data[x].values[index]),
              "replicated": torch.as_tensor(idata.posterior_predictive[x].values[0, 0, index])}
    return figure(show_images(panels, shape, ncol=4), "worst datapoints")


def piano_roll_panels(ctx, n: int = 3):
    idata, model = ctx["idata"], ctx["model"]
    name = D.observed_variable(idata)
    x = None if name is None else idata.observed_data[name]
    dims = D.dims_of(idata)
    if x is None or dims.time not in x.dims or x.sizes.get(dims.feature) != KEYS:
        return None  # not piano rolls (88 keys per frame)
    rolls, titles = [], []
    for i in range(min(n, x.sizes[dims.datapoint])):
        frames = int(x.isel({dims.datapoint: i}).notnull().all(dims.feature).sum())
        rolls += [np.nan_to_num(x.values[i, :frames]),
                  np.nan_to_num(idata.posterior_predictive[name].values[0, 0, i, :frames])]
        titles += [f"test sequence {i}", f"replicated from p(x | z), z ~ q (sequence {i})"]
    if isinstance(model, Samples):
        with torch.no_grad():
            rolls += list(model.sample(2, min(64, x.sizes[dims.time])).cpu().numpy())
        titles += ["sample from p(x)", "sample from p(x)"]
    return plot_piano_rolls(rolls, titles)


def latent_traversals(ctx, steps: int = 9, max_dims: int = 16):
    shape, model = _image_shape(ctx), ctx["model"]
    means = _posterior_mean_z(ctx)
    if shape is None or means is None or _decoder_mean(ctx, means[:1].to(_device(model))) is None:
        return None
    activity = D.latent_activity(ctx["idata"], _code(ctx)).values
    dims = np.argsort(-activity)[:max_dims]
    values = torch.linspace(-3, 3, steps)
    z = means[0].repeat(len(dims), steps, 1)
    for row, d in enumerate(dims):
        z[row, :, d] = values
    images = _decoder_mean(ctx, z.reshape(-1, z.shape[-1]).to(_device(model))).cpu()
    fig, ax = plt.subplots(figsize=(0.75 * steps + 1, 0.75 * len(dims) + 0.6))
    ax.imshow(image_grid(images, shape, ncol=steps), cmap="gray_r", interpolation="nearest")
    ax.set_yticks([(shape[1] + 1) * r + shape[1] / 2 for r in range(len(dims))], [f"z[{d}]" for d in dims])
    ax.set_xticks([(shape[2] + 1) * c + shape[2] / 2 for c in range(steps)], [f"{v:.1f}" for v in values.tolist()])
    ax.tick_params(length=0)
    fig.tight_layout()
    return fig


def frames_per_datapoint(idata):
    """Real (unpadded) frames per sequence, or None for non-sequence data."""
    x = next(iter(idata.observed_data.data_vars.values()))
    dims = D.dims_of(idata)
    if dims.time not in x.dims:
        return None
    return x.notnull().all([d for d in x.dims if d not in (dims.datapoint, dims.time)]).sum(dims.time)


# -- HTML ---------------------------------------------------------------------------------------

STYLE = """
.ppgen-report { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
  color: #1b1b1b; max-width: 1150px; line-height: 1.45; }
.ppgen-report h1 { font-size: 1.6em; margin-bottom: 0.1em; }
.ppgen-report h2 { font-size: 1.25em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }
.ppgen-report .subtitle { color: #666; margin-top: 0; }
.ppgen-report table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
.ppgen-report th, .ppgen-report td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; }
.ppgen-report th { background: #f4f4f4; }
.ppgen-report img { max-width: 100%; height: auto; }
.ppgen-report figure { margin: 0.6em 0; }
.ppgen-report nav a { margin-right: 0.8em; }
"""


def render(title: str, sections, subtitle: str = "") -> str:
    """The report body: a title, a table of contents and the sections."""
    toc = " ".join(f'<a href="#{sid}">{html.escape(name)}</a>' for sid, name, _ in sections)
    parts = [f"<style>{STYLE}</style>", f"<h1>{html.escape(title)}</h1>",
             f'<p class="subtitle">{html.escape(subtitle)}</p>', f"<nav>{toc}</nav>"]
    parts += [f'<section id="{sid}"><h2>{html.escape(name)}</h2>{content}</section>' for sid, name, content in sections]
    return '<div class="ppgen-report">' + "\n".join(parts) + "</div>"


def page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
            f"</head>\n<body>\n{body}\n</body>\n</html>\n")


def table(header, rows) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def figure(fig, alt: str, dpi: int = 90) -> str:
    """A matplotlib figure as an embedded PNG (closed afterwards)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></figure>'


# -- helpers ------------------------------------------------------------------------------------

def _khat_text(k: float) -> str:
    return "-inf (exact)" if np.isneginf(k) else f"{k:.2f}"


def _posterior_draws(test) -> int:
    # cap the stored arrays at ~2 * 10^7 entries (long sequences): 100 draws of 447 digits is ~3 * 10^6
    x = test[0] if isinstance(test, (tuple, list)) else test
    return int(np.clip(2e7 // max(1, x.numel()), 10, POSTERIOR_DRAWS))


def _device(model):
    params = next(model.parameters(), None) if isinstance(model, torch.nn.Module) else None  # a function has none
    return params.device if params is not None else torch.device("cpu")


__all__ = ["Report", "diagnose", "write_report", "render", "page", "table", "figure", "SECTIONS"]
