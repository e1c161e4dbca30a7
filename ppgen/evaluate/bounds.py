"""Held-out evaluation in nats: the ELBO and the importance-sampled log-likelihood, and
:func:`evaluate`, the standard numbers (with the latent metrics of :mod:`.latents`).

Which numbers are defined depends on where the latents are (found from the traces, no site
or plate name assumed; the data plate is the plate at dim -1):

* every latent local (inside the data plate, one per datapoint: VAE-like): each datapoint
  has its own log p(x_n) = log E_q(z|x_n)[p(x_n, z) / q(z | x_n)];
* some latent global (theta, outside the data plate): q(theta) approximates the posterior
  given the data the pair was fit to. Each datapoint, held out or not, has a predictive
  density log E_q(theta)[p(y_n | theta)], the local latents z_n integrated out by importance
  sampling (:func:`heldout_log_weights` with ``local=True``); the fitted data as a whole has one
  log p(y) = log E_q[p(y, theta, z) / q(theta, z | y)] (:func:`joint_log_weights`), which
  judges q(theta) and is only meaningful on the data q was fit to.

Sign convention: an ELBO or log-likelihood is a log-density (higher is better, negative for
discrete data); "-ELBO" / NLL in the literature are the same numbers with the sign flipped.
"""
from __future__ import annotations

import math

import pyro
import torch
from tqdm.auto import tqdm

from ..data.base import model_args
from ..data.labels import PartiallyLabelled
from ..guides.sites import enumerated_sites
from ..infer.arguments import positive_int
from ..infer.importance import importance_sample, in_data_plate, log_importance_weights
from ..infer.objectives import EnumELBO
from ..infer.precision import outside_autocast
from ..nn import eval_mode
from .labels import classifier_accuracy
from .latents import (active_units, code_sparsity, guide_activity, has_sparse_prior, keep_rng, latent_activity,
                      latent_variables, site_mask, step_groups, variable_draws)


def _batches(data, batch_size):
    data = model_args(data)
    for i in range(0, data[0].shape[0], batch_size):
        yield tuple(t[i:i + batch_size] for t in data)


@torch.no_grad()
def test_elbo(model, guide, data, num_samples: int = 10, batch_size: int = 256) -> float:
    """ELBO per datapoint (nats), each datapoint's bound averaged over ``num_samples`` draws:
    the mean joint log-weight of :func:`~ppgen.infer.importance.importance_sample` (the value
    of Pyro's ``Trace_ELBO`` with vectorized particles, on the same draws); where the guide
    marks sites for enumeration they are summed out (the value of Pyro's ``TraceEnum_ELBO``)."""
    args = model_args(data)
    with keep_rng(args), eval_mode(guide):  # discovery leaves the random state as it was
        enumerated = enumerated_sites(guide, *(t[:2] for t in args))
    objective = EnumELBO(num_samples) if enumerated else None
    total, n = 0.0, 0
    with eval_mode(model, guide), pyro.validation_enabled(False):
        for batch in _batches(args, batch_size):
            if objective is not None:
                total -= objective(model, guide, *batch).item()
            else:
                sample = importance_sample(model, guide, *batch, num_particles=num_samples)
                with outside_autocast():
                    log_w = sample.log_density(sample.model_sites) - sample.log_density(sample.guide_sites)
                total += float(log_w.double().mean())
            n += batch[0].shape[0]
    return total / n


#: The memory budget of one pass of importance draws, in bytes: a pass takes D datapoints and
#: S draws of each with D * S * (bytes per draw, :func:`draw_bytes`) <= DRAW_BUDGET. Sequence
#: models pay Python overhead per step and pass, so they need passes of hundreds of draws; an
#: MLP VAE runs as fast at 64 MB as at 256 MB (BENCHMARKS.md, "Evaluation cost"). What a pass
#: really holds is less than the budget: draw_bytes counts what a backward pass would keep.
DRAW_BUDGET = 256 * 2 ** 20


@torch.no_grad()
def draw_bytes(model, guide, args, *, local: bool = False) -> int:
    """The memory that one more importance draw of one datapoint adds to a pass, in bytes:
    measured on the first datapoint of ``args`` with one and with two draws, as the tensors
    that the run keeps for a backward pass (every network activation and site parameter that
    grows with the draws) or, where that is smaller (a program without parameters), its sites'
    values and log-densities. The random state is left as it was."""
    first = tuple(a[:1] for a in args)
    kept = {}
    for draws in (1, 2):
        sizes = [0, 0]  # kept for backward, site tensors

        def pack(t):
            sizes[0] += t.numel() * t.element_size()
            return t

        with keep_rng(first), eval_mode(model, guide), pyro.validation_enabled(False), torch.enable_grad(), \
                torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            sample = importance_sample(model, guide, *first, num_particles=draws)
            terms = sample.local_log_weights() if local else sample.log_weights()
        for msg in (*sample.model_sites.values(), *sample.guide_sites.values()):
            sizes[1] += msg["value"].numel() * msg["value"].element_size()
        sizes[1] += terms.numel() * terms.element_size() * (len(sample.model_sites) + len(sample.guide_sites))
        kept[draws] = sizes
    return max(1, *(two - one for one, two in zip(kept[1], kept[2])))


def draw_plan(n: int, k: int, per_draw: int, budget: int = DRAW_BUDGET) -> tuple[int, int]:
    """``(datapoints, draws)`` per pass for ``k`` importance draws of each of ``n`` datapoints,
    ``per_draw`` bytes each (:func:`draw_bytes`): all ``k`` draws of a datapoint in one pass
    when they fit the ``budget`` (so what depends on the datapoint alone, such as an amortized
    guide's encoder, runs once per datapoint), as many datapoints per pass as fit beside them;
    otherwise one datapoint and as many draws as fit."""
    if min(n, k, per_draw, budget) < 1:
        raise ValueError(f"n, k, per_draw and budget must be positive, got {n}, {k}, {per_draw}, {budget}")
    cells = max(1, budget // per_draw)  # (datapoint, draw) pairs per pass
    draws = min(k, cells)
    return max(1, min(n, cells // draws)), draws


def draw_progress(total: int, progress: bool, desc: str) -> tqdm:
    """The progress bar of an evaluation pass over ``total`` importance draws (off unless
    ``progress``), like the training loop's."""
    return tqdm(total=total, desc=desc, unit="draw", unit_scale=True, disable=not progress, leave=False)


@torch.no_grad()
def heldout_log_weights(model, guide, data, k: int = 1000, batch_size: int | None = None, chunk: int | None = None, *,
                        local: bool = False, budget: int = DRAW_BUDGET, progress: bool = False,
                        bar: tqdm | None = None) -> torch.Tensor:
    """log w[k, n] = log p(x_n, z_kn) - log q(z_kn | x_n) for ``k`` draws z_kn ~ q(z | x_n) per
    datapoint of ``data`` (a tensor or a tuple of the model's arguments): ``[k, N]``, taken
    ``batch_size`` datapoints and ``chunk`` draws at a time (by default as :func:`draw_plan`
    sizes them to ``budget``). Raises ``ValueError`` for a global latent unless ``local``: then
    only the sites inside the data plate count, log p(x_n, z_kn | theta_k) - log q(z_kn | x_n,
    theta_k) with theta_k ~ q drawn alongside
    (:meth:`~ppgen.infer.importance.ImportanceSample.local_log_weights`; the same weights as
    without ``local`` when every latent is local). ``progress`` shows a bar of the draws
    (``bar``: advance an open one instead)."""
    args = model_args(data)
    n = args[0].shape[0]
    if batch_size is None or chunk is None:
        planned = draw_plan(n, k, draw_bytes(model, guide, args, local=local), budget)
        batch_size, chunk = batch_size or planned[0], chunk or planned[1]

    def weights(batch, draws):
        if not local:
            return log_importance_weights(model, guide, *batch, num_particles=draws)
        with pyro.validation_enabled(False):
            return importance_sample(model, guide, *batch, num_particles=draws).local_log_weights()

    own_bar = bar is None
    bar = draw_progress(k * n, progress, f"IWAE log p(x), K={k}") if own_bar else bar
    out = None
    try:
        with eval_mode(model, guide):
            for i in range(0, n, batch_size):
                batch = tuple(t[i:i + batch_size] for t in args)
                for j in range(0, k, chunk):
                    draws = min(chunk, k - j)
                    log_w = weights(batch, draws)
                    if out is None:
                        out = log_w.new_empty(k, n)
                    out[j:j + draws, i:i + batch_size] = log_w
                    bar.update(draws * batch[0].shape[0])
    finally:
        if own_bar:
            bar.close()
    return out


@torch.no_grad()
def joint_log_weights(model, guide, data, k: int = 1000, chunk: int | None = None, *,
                      progress: bool = False) -> torch.Tensor:
    """log w_k = log p(y, theta_k, z_k) - log q(theta_k, z_k | y) for ``k`` draws of all the
    latents given the whole of ``data`` at once: ``[k]``. ``logsumexp(w) - log k`` estimates
    log p(y) of the data set (a bound in expectation); its mean is the full-data ELBO. The
    weights of a model with global latents theta (for models without, their sum over
    datapoints of :func:`heldout_log_weights`). ``chunk`` draws are vectorized at a time (by
    default as many as keep a copy of the data to ~10^7 entries); ``progress`` shows a bar."""
    args = model_args(data)
    chunk = chunk or int(min(100, max(1, 1e7 // max(1, args[0].numel()))))
    out = []
    with eval_mode(model, guide), pyro.validation_enabled(False), \
            draw_progress(k, progress, f"joint log p(y), K={k}") as bar:
        particle_dim = -(_plate_nesting(model, guide, args) + 1)
        for j in range(0, k, chunk):
            sample = importance_sample(model, guide, *args, num_particles=min(chunk, k - j), particle_dim=particle_dim,
                                       enumerate=False)  # enumerated sites drawn: one joint weight per draw
            out.append(sample.log_density(sample.model_sites) - sample.log_density(sample.guide_sites))
            bar.update(min(chunk, k - j))
    return torch.cat(out)


@torch.no_grad()
def global_latent_sites(model, guide, data) -> list[str]:
    """The model's latent sites outside the data plate (global latents), in trace order, from
    one run of the pair on ``data`` (the random state is left as it was)."""
    args = model_args(data)
    sample = _one_run(model, guide, args)
    return [name for name, msg in sample.model_sites.items()
            if not msg["is_observed"] and not msg["infer"].get("_deterministic") and not in_data_plate(msg)]


def _one_run(model, guide, args):
    # discovery must not move the random state: evaluate's numbers stay those of a run without it
    with keep_rng(args), eval_mode(model, guide), pyro.validation_enabled(False):
        return importance_sample(model, guide, *args, num_particles=None)


def _plate_nesting(model, guide, args) -> int:
    sample = _one_run(model, guide, args)
    return max((-f.dim for sites in (sample.model_sites, sample.guide_sites) for msg in sites.values()
                for f in msg["cond_indep_stack"] if f.vectorized), default=0)


def iwae_log_likelihood(model, guide, data, k: int = 1000, batch_size: int | None = None, chunk: int | None = None,
                        *, budget: int = DRAW_BUDGET, progress: bool = False, bar: tqdm | None = None) -> torch.Tensor:
    """log p(x_n) estimated by importance sampling with ``k`` draws from q(z | x_n) (the IWAE
    bound, Burda et al. 2016): a lower bound in expectation that tightens as k grows.
    Returns one value per datapoint. The draws are taken in passes as in
    :func:`heldout_log_weights`."""
    log_w = heldout_log_weights(model, guide, data, k, batch_size, chunk, budget=budget, progress=progress, bar=bar)
    return torch.logsumexp(log_w, 0) - math.log(k)


def evaluate(model, guide, data, *, fit_data=None, k: int = 1000, elbo_samples: int = 10,
             sparsity: bool | None = None, progress: bool = False) -> dict:
    """The standard numbers for a trained pair on held-out ``data`` (a tensor or a tuple of
    the model's arguments), log-densities per datapoint in nats:

    * ``test_elbo_nats`` and ``test_iwae_nats``: the ELBO (``elbo_samples`` draws per
      datapoint) and the importance-sampled log p(x_n) (``iwae_k`` = ``k`` draws). With global
      latents theta (``global_latents`` names the sites) log p(x_n) is the predictive density
      log E_q(theta)[p(y_n | theta)] and the ELBO its bound E_q[log p(y_n, z | theta) -
      log q(z | y_n, theta)], both from ``k`` draws of (theta, z): held-out numbers with the
      same meaning as for an all-local model, whose theta is a point estimate;
    * with global latents and ``fit_data`` (the data the guide was trained on): ``fit_elbo_nats``
      and ``fit_iwae_nats``, the full-data ELBO and importance-sampled log p(y) of ``fit_data``
      (``k`` joint draws) divided by its size: how well q(theta) fits the posterior it
      approximates. On other data they would judge q against a posterior it never saw, so they
      are computed on ``fit_data`` only (ignored for all-local models);

    for a sequence model (its observed sites are per-step, ``x_1 .. x_T`` or ``x_0 ..``, as
    Pyro's DMM writes them) also the per-frame numbers the literature quotes,
    ``test_elbo_per_frame_nats`` and ``test_iwae_per_frame_nats`` (the sums over sequences
    divided by the real frames: entries that a mask leaves out, wherever it was put, are
    padding), with ``frames`` and ``sequences`` (:func:`observed_frames`);

    and for the guide's local vector latents (found from its trace; per-step sites z_1..z_T
    are one variable z) ``kl_nats`` (:func:`latent_kl_nats`, for all-local models; the KL of each
    layer of a hierarchy), ``active_units`` and, when ``sparsity`` (by default: the model's
    prior is sparse), ``code_sparsity``; with several such variables, ``kl_nats_<name>``,
    ``active_units_<name>`` and ``code_sparsity_<name>`` for each. ``progress`` shows a bar for the importance draws
    (the part that takes time).

    The guide's sites marked for enumeration (``config_enumerate``) are summed out exactly in
    the bounds (:mod:`ppgen.infer.importance`). ``data`` a :class:`ppgen.data.PartiallyLabelled`
    (held-out rows with labels): the bounds are of x alone, the label summed or integrated
    out, and ``test_accuracy`` is the accuracy of the guide's q(y | x) on the labelled rows
    (``label_site`` names the site, ``labelled`` counts the rows;
    :func:`~ppgen.evaluate.labels.classifier_accuracy`)."""
    k, elbo_samples = positive_int(k, "k"), positive_int(elbo_samples, "elbo_samples")
    labelled = data if isinstance(data, PartiallyLabelled) else None
    if labelled is not None:
        data = labelled.x
    if sparsity is None:
        sparsity = has_sparse_prior(model)
    args = model_args(data)
    variables = latent_variables(guide, *args)
    global_sites = global_latent_sites(model, guide, args)
    if global_sites:
        metrics = {**_predictive_bounds(model, guide, args, k, progress), "global_latents": list(global_sites)}
        if fit_data is not None:
            metrics.update(_fit_bounds(model, guide, model_args(fit_data), k, progress))
    else:
        metrics = _local_bounds(model, guide, data, k, elbo_samples, progress)
        for name, kl in latent_kl_nats(model, guide, args, variables, elbo_samples).items():
            metrics["kl_nats" if len(variables) == 1 else f"kl_nats_{name}"] = kl
    for name, sites in variables.items():
        key = "" if len(variables) == 1 else f"_{name}"
        activity = (guide_activity(guide, *args, site=sites[0]) if len(sites) == 1
                    else latent_activity(variable_draws(guide, *args, sites=sites, num_samples=32)))
        metrics[f"active_units{key}"] = active_units(activity)
    for name, sites in variables.items() if sparsity else ():
        key = "" if len(variables) == 1 else f"_{name}"
        metrics[f"code_sparsity{key}"] = code_sparsity(variable_draws(guide, *args, sites=sites, num_samples=8))
    frames = observed_frames(model, guide, args)
    if frames is not None:
        n = args[0].shape[0]
        metrics.update({"test_elbo_per_frame_nats": metrics["test_elbo_nats"] * n / frames,
                        "test_iwae_per_frame_nats": metrics["test_iwae_nats"] * n / frames,
                        "frames": frames, "sequences": n})
    if labelled is not None and bool(labelled.known.any()):
        metrics.update(classifier_accuracy(model, guide, labelled))
    return metrics


@torch.no_grad()
def observed_frames(model, guide, data) -> int | None:
    """The real frames of sequence data: for a model whose observed sites are per-step
    (``<name>_<t>``, two or more steps, grouped as :func:`~ppgen.evaluate.latents.step_groups`
    groups them), the number of (datapoint, step) entries of the first such variable that its
    masks leave in (:func:`~ppgen.evaluate.latents.site_mask`: ``.mask()`` under or over
    ``.to_event()``, ``poutine.mask``); None for a model without per-step observed sites."""
    sample = _one_run(model, guide, model_args(data))
    observed = {name: msg for name, msg in sample.model_sites.items()
                if msg["is_observed"] and not msg["infer"].get("_deterministic")}
    groups = step_groups(observed)
    if not groups:
        return None
    total = 0
    for name in next(iter(groups.values())):
        msg = observed[name]
        shape = msg["fn"].batch_shape
        mask = site_mask(msg)
        mask = mask.expand(shape) if mask is not None else torch.ones(shape, dtype=torch.bool)
        # a frame is one datapoint (the data plate, dim -1) at one step, whatever other plates the site is in
        total += int(mask.reshape(-1, shape[-1]).any(0).sum()) if len(shape) else int(mask)
    return total



@torch.no_grad()
def latent_kl_nats(model, guide, data, variables: dict[str, list[str]], num_samples: int = 10,
                   batch_size: int = 256) -> dict[str, float]:
    """KL per datapoint in nats of each local latent variable (``{name: [sites]}``, as
    :func:`~ppgen.evaluate.latents.latent_variables` gives them), by Monte Carlo over
    ``num_samples`` draws z ~ q(z | x): E_q[log q(z_v | ...) - log p(z_v | ...)], each site scored
    under the conditionals the guide and the model give it (in a hierarchy, the KL of layer l
    given the layer above, the per-layer term of the ELBO = E_q[log p(x | z)] - sum of these).
    A layer whose KL is ~0 carries no information about x. For all-local models (a site
    outside the data plate raises ``ValueError``). A site the guide enumerates (y) is summed,
    not drawn: its KL is KL(r || p(y)) with r(y) the exact posterior of y given x and the draw,
    and the other sites' terms are averaged under r
    (:meth:`~ppgen.infer.importance.ImportanceSample.site_terms`)."""
    args = model_args(data)
    totals, n = dict.fromkeys(variables, 0.0), 0
    with eval_mode(model, guide), pyro.validation_enabled(False):
        particle_dim = -(_plate_nesting(model, guide, args) + 1)
        for batch in _batches(args, batch_size):
            sample = importance_sample(model, guide, *batch, num_particles=num_samples, particle_dim=particle_dim)
            with outside_autocast():
                terms = sample.site_terms()  # log p - log q per site, [K, N]
            for name, sites in variables.items():
                totals[name] -= float(sum(terms[site] for site in sites).double().mean(0).sum())
            n += batch[0].shape[0]
    return {name: total / n for name, total in totals.items()}


def _local_bounds(model, guide, data, k, elbo_samples, progress) -> dict:
    log_px = iwae_log_likelihood(model, guide, data, k=k, progress=progress)
    return {"test_elbo_nats": test_elbo(model, guide, data, num_samples=elbo_samples),
            "test_iwae_nats": float(log_px.mean()), "iwae_k": k}


def _predictive_bounds(model, guide, args, k, progress) -> dict:
    local = heldout_log_weights(model, guide, args, k, local=True, progress=progress).double()
    return {"test_elbo_nats": float(local.mean()),
            "test_iwae_nats": float((torch.logsumexp(local, 0) - math.log(k)).mean()), "iwae_k": k}


def _fit_bounds(model, guide, args, k, progress) -> dict:
    n = args[0].shape[0]
    log_w = joint_log_weights(model, guide, args, k, progress=progress).double()
    return {"fit_elbo_nats": float(log_w.mean()) / n,
            "fit_iwae_nats": float(torch.logsumexp(log_w, 0) - math.log(k)) / n}
