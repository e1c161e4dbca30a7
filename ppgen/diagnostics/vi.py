"""What a variational fit says, as ArviZ data, and the diagnostics that are right for VI.

This is the only ppgen module that imports ArviZ.

A fit by SVI gives a guide q, not a posterior: draws from q are i.i.d., so R-hat and ESS
(MCMC convergence diagnostics) say nothing about whether the fit worked and are not
computed here. What does say it:

* **PSIS k-hat per datapoint** (Yao et al., 2018, "Yes, but did it work?"): the Pareto tail
  shape of the importance weights w = p(x, z) / q(z | x), z ~ q(z | x). k-hat < 0.5: q is a
  good proposal for the exact posterior p(z | x); 0.5-0.7: usable, importance sampling
  corrects it at a slower rate; > 0.7: the weights' variance is effectively infinite and
  q (and every estimate that leans on it) is not to be trusted for that datapoint.
* **Importance-sampled log p(x)** with its Monte Carlo standard error, and the **ELBO gap**
  log p(x) - ELBO = KL(q(z|x) || p(z|x)) (estimated), per datapoint.
* **PSIS-LOO for global latents**, corrected for drawing from q instead of the posterior
  (Magnusson et al., 2019), with the k-hat of that correction.
* **Latent health**: KL per latent dimension and per time step, active units, sparsity.
* **Posterior predictive checks** on statistics that suit the data.

``to_inference_data`` is generic over Pyro programs: it draws from the guide and replays
the model on the draws (:func:`ppgen.infer.importance.importance_sample`, as every
importance weight in ppgen), and names every array's dimensions from the plates (``draw``,
``datapoint`` for the data plate, the plate at dim -1; ``time`` for per-step sites
``z_0..z_{T-1}``). Draws come first in every tensor ([K, N]); ArviZ's PSIS wants them last
and gets them transposed where it is called.
"""
from __future__ import annotations

import inspect
import json
import math
import os
import warnings
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path

import numpy as np
import pyro
import torch
import xarray as xr

from ..data.base import model_args
from ..distributions.declared import marginal_log_prob
from ..evaluate import latents
from ..evaluate.bounds import global_latent_sites, heldout_log_weights, joint_log_weights
from ..guides.sites import enumerated_sites
from ..infer.arguments import positive_int
from ..infer.checkpoint import new_file_mode
from ..infer.importance import PARTICLES, importance_sample
from ..nn import eval_mode

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)  # ArviZ announces its 1.0 refactor on import
    import arviz as az

#: k-hat thresholds (Vehtari et al., 2024): below GOOD the guide is a good importance
#: proposal, above BAD it is not trustworthy for that datapoint.
KHAT_GOOD, KHAT_BAD = 0.5, 0.7



# -- InferenceData -----------------------------------------------------------------------------

@torch.no_grad()
def to_inference_data(model, guide, data, num_samples: int = 100, *, history=None, data_plate: str | None = None,
                      vectorize: bool = True, chunk: int | None = None, obs_index=None,
                      attrs: dict | None = None) -> az.InferenceData:
    """An ArviZ InferenceData of ``num_samples`` draws from the guide given ``data``.

    ``data`` is what the model is called with: a tensor or a tuple ``(x, mask)``, ``(X, y)``.
    Groups (one chain; ``datapoint`` is the dimension of the ``data_plate``, by default the plate
    at dim -1):

    * ``posterior``: latent sites drawn from q. Local latents (inside the data plate) are
      ``[chain, draw, datapoint, ...]``; global ones ``[chain, draw, ...]``. Sites ``z_0..z_{T-1}``
      are stacked into one variable ``z`` with a ``time`` dimension. Vector latents have the
      dimension ``latent``.
    * ``posterior_predictive``: replicated data drawn from p(x | latents) for each draw.
    * ``log_likelihood``, for models with global latents theta: what PSIS-LOO needs,
      log p(y_i | theta_s) per draw s and datapoint i, with every local latent integrated out
      (its attribute ``pointwise`` says which):

      - global latents theta only: log p(y_i | theta_s), one variable per observed site;
      - global and local latents: log p(y_i, z_si | theta_s) - log q(z_si | y_i, theta_s),
        an unbiased one-draw estimate of p(y_i | theta_s) (exact in :func:`guide_corrected_loo`,
        which weighs draws on the joint space).

      The draws come from q, not the posterior: for global latents use
      :func:`guide_corrected_loo`, not ``az.loo`` (which treats them as posterior draws), on
      the InferenceData of the data the guide was trained on (LOO leaves out one of those).
      A model whose latents are all local (a VAE: the networks are point estimates) has no
      such group: there is nothing to leave out but x_i itself, elpd_loo_i is log p(x_i), and
      equal values across draws would give ``az.loo`` k-hats of inf. Its pointwise log p(x_i)
      is ``log_px`` of :func:`importance_diagnostics` (group ``vi_diagnostics`` of a report,
      with the K of metrics.json); the posterior's attribute ``log_likelihood`` says so.
    * ``conditional_log_likelihood``: log p(x_i | all latents of draw s) per observed site
      (summed over time and features; masked steps contribute 0): a reconstruction term,
      not a pointwise predictive density.
    * ``observed_data``; ``constant_data`` (the model's other arguments, e.g. covariates, masks).
    * ``sample_stats``: ``lp`` = log p(latents, data) and ``log_q`` = log q(latents) per draw
      (what :func:`guide_corrected_loo` needs).
    * ``training``: the fit's history (ELBO per epoch and per step), when ``history`` (a
      :class:`ppgen.infer.History` or its dict) is given.

    Padded (masked) entries of sequence sites are NaN, wherever the mask was put
    (:func:`ppgen.evaluate.latents.site_mask`). A model whose code does not broadcast over a
    leading draw dimension is drawn one draw at a time by itself (with a warning, see
    :func:`ppgen.infer.importance.importance_sample`); ``vectorize=False`` (no longer needed,
    kept for old calls) asks for that loop directly. ``chunk`` sets how many draws are
    vectorized at once (memory). Site names are found from the traces and kept as they are:
    where a site or plate takes the name of one of ppgen's dimensions, the dimension is
    renamed (:class:`Dims`, recorded in the attribute ``dims``).

    Which ArviZ functions mean something here: ``az.summary(..., kind="stats")``,
    ``az.plot_posterior``, ``az.plot_pair``, ``az.hdi`` (summaries of q), ``az.plot_ppc``
    (posterior predictive checks), and for global latents :func:`guide_corrected_loo`. Which do
    not: ``az.rhat``, ``az.ess``, ``az.mcse``, ``az.plot_trace`` and the diagnostics of
    ``az.summary``: draws from q are i.i.d. by construction, so they say nothing about the fit.
    ``az.loo``/``az.compare`` of an all-local model refuse (no ``log_likelihood`` group):
    compare such fits with :func:`ppgen.diagnostics.compare`.
    """
    num_samples = positive_int(num_samples, "num_samples")
    chunk = positive_int(chunk, "chunk", optional=True)
    args = model_args(data)
    groups = _draw(model, guide, args, num_samples, data_plate, vectorize, chunk)
    n_obs = _obs_size(groups)
    pointwise, pointwise_meaning = _pointwise(groups, num_samples)
    stacked = {g: _stack_time(groups[g]) for g in ("posterior", "posterior_predictive", "observed_data")}
    conditional = _per_datapoint(_stack_time(groups["log_likelihood"], reduce=True))
    names = [n for g in (*stacked.values(), conditional, pointwise or {}) for n in g] + _argument_names(model, len(args))
    dims = Dims.avoiding(names)
    coords = {"chain": [0], "draw": np.arange(num_samples), "time": _time_coords(groups)}
    if n_obs is not None:
        coords["datapoint"] = np.arange(n_obs) if obs_index is None else np.asarray(obs_index)
    datasets = {
        "posterior": _dataset(stacked["posterior"], coords, "latent", True, dims),
        "posterior_predictive": _dataset(stacked["posterior_predictive"], coords, "feature", True, dims),
        "conditional_log_likelihood": _dataset(conditional, coords, None, True, dims),
        "observed_data": _dataset(stacked["observed_data"], coords, "feature", False, dims),
        "sample_stats": _dataset(groups["sample_stats"], coords, None, True, Dims()),
    }
    if pointwise is not None:
        datasets["log_likelihood"] = _dataset(pointwise, coords, None, True, dims)
    constant = _constant_data(model, args, set(stacked["observed_data"]), n_obs, coords, dims)
    if constant is not None:
        datasets["constant_data"] = constant
    if history is not None:
        datasets["training"] = training_dataset(history)
    meta = {"inference_library": "pyro", "inference_library_version": pyro.__version__,
            "model": _name(model), "guide": _name(guide),
            "draws": "i.i.d. from the variational guide q, not MCMC: R-hat and ESS do not apply",
            **dims.attrs(), **_enumeration_note(guide, args), **{k: _attr(v) for k, v in (attrs or {}).items()}}
    for ds in datasets.values():
        ds.attrs.update(meta)
    if pointwise is not None:
        datasets["log_likelihood"].attrs["pointwise"] = pointwise_meaning
    else:
        datasets["posterior"].attrs["log_likelihood"] = pointwise_meaning
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # ArviZ notes groups outside its schema (ppgen's own)
        return az.InferenceData(**datasets)


#: the roles of ppgen's own dimensions (besides ArviZ's ``chain`` and ``draw``)
ROLES = ("datapoint", "time", "latent", "feature")


@dataclass(frozen=True)
class Dims:
    """The names of ppgen's dimensions in one InferenceData: the data plate's ``datapoint``,
    ``time`` for per-step sites, ``latent`` for vector codes (``latent_<name>`` for a second
    code of another size) and ``feature`` for vector data; other plates are named after
    themselves. A user's site names are the user's: where a site (or the model's argument
    or plate) takes one of these names, the dimension gets underscores appended (``latent``
    -> ``latent_``) and every dataset records the names used in its attribute ``dims``
    (:func:`dims_of` reads them). A site named like ArviZ's own ``chain`` or ``draw``, which
    no dataset can hold beside those dims, is stored as ``<name>_`` and listed in the
    attribute ``renamed_sites``."""

    datapoint: str = "datapoint"
    time: str = "time"
    latent: str = "latent"
    feature: str = "feature"
    taken: frozenset = frozenset()

    @staticmethod
    def avoiding(names) -> "Dims":
        taken = frozenset(names)
        return Dims(**{role: _free(role, taken) for role in ROLES}, taken=taken)

    def dim(self, name: str) -> str:
        """The name a dimension written as ``name`` (a role, ``latent_<site>``, a plate, an
        event dim) gets."""
        if name in ("chain", "draw"):
            return name
        if name in ROLES:
            return getattr(self, name)
        if name.startswith("latent_") and self.latent != "latent":
            return _free(self.latent + name[len("latent"):], self.taken)
        return _free(name, self.taken)

    def variable(self, name: str) -> str:
        return _free(name, self.taken | {"chain", "draw"} - {name}) if name in ("chain", "draw") else name

    def attrs(self) -> dict:
        renamed = {n: self.variable(n) for n in self.taken if n in ("chain", "draw")}
        return {"dims": json.dumps({role: getattr(self, role) for role in ROLES}),
                **({"renamed_sites": json.dumps(renamed)} if renamed else {})}


def _enumeration_note(guide, args) -> dict:
    """The attribute that says which sites of the guide are marked for enumeration: their
    posterior draws are sampled from q, while ppgen's bounds and k-hat sum them out."""
    with latents.keep_rng(args), eval_mode(guide):  # discovery leaves the random state as it was
        sites = enumerated_sites(guide, *args)
    return {"enumerated_sites": ", ".join(sites), "enumerated_sites_note": (
        "sampled from q here (draws of the discrete site); the bounds and k-hat of ppgen.evaluate and "
        "importance_diagnostics sum these sites out exactly")} if sites else {}


def _free(name: str, taken) -> str:
    while name in taken:
        name += "_"
    return name


def is_inference_data(obj) -> bool:
    return isinstance(obj, az.InferenceData)


def dims_of(data) -> Dims:
    """The :class:`Dims` of a ppgen InferenceData or of one of its datasets (the defaults for
    data written before the names were recorded)."""
    attrs = data.posterior.attrs if isinstance(data, az.InferenceData) else data.attrs
    return Dims(**json.loads(attrs["dims"])) if "dims" in attrs else Dims()


def _time_coords(groups) -> np.ndarray | None:
    return _step_coords([groups[g] for g in ("posterior", "posterior_predictive", "observed_data")])


def _step_coords(variable_sets) -> np.ndarray | None:
    """The step indices of the per-step sites (``z_1 .. z_T`` gives 1..T) when every grouped
    variable has the same ones, else None (positions 0..T-1)."""
    indices = set()
    for variables in variable_sets:
        for members in latents.step_groups(variables).values():
            indices.add(tuple(latents.step_site(n)[1] for n in members))
    return np.asarray(next(iter(indices))) if len(indices) == 1 else None


def _pointwise(groups, num_samples) -> tuple[dict | None, str]:
    """The ``log_likelihood`` variables (``{name: (array, dims)}``) and what they hold; None
    (and why) for a model whose latents are all local."""
    conditional = _per_datapoint(_stack_time(groups["log_likelihood"], reduce=True))
    posterior = groups["posterior"].values()
    has_global = any("datapoint" not in dims for _, dims in posterior)
    has_local = any("datapoint" in dims for _, dims in posterior)
    if not has_local or "local" not in groups["log_weight"]:
        return conditional, "log p(y_i | theta_s): the likelihood given the draw of the global latents"
    name = "_and_".join(conditional) or "log_px"
    log_w, dims = groups["log_weight"]["local"]
    if has_global:
        return {name: (log_w, dims)}, ("log p(y_i, z_si | theta_s) - log q(z_si | y_i, theta_s): a one-draw importance "
                                       "estimate of log p(y_i | theta_s), the local latents z_i integrated out")
    return None, LOCAL_LOO_NOTE


#: why an all-local model's InferenceData has no ``log_likelihood`` group (its posterior's attribute)
LOCAL_LOO_NOTE = (
    "no log_likelihood group: every latent is local (one per datapoint) and the networks are point estimates, so "
    "there is nothing to leave out but x_i itself: elpd_loo_i = log p(x_i), and equal values across draws would give "
    "az.loo k-hats of inf. The pointwise log p(x_i) is log_px of ppgen.diagnostics.importance_diagnostics (group "
    "vi_diagnostics of a ppgen report, K draws as in metrics.json); compare two fits with ppgen.compare, not "
    "az.loo/az.compare")


def training_dataset(history) -> xr.Dataset:
    """The fit's history as a Dataset: per-epoch ``train_elbo``, ``val_elbo``, ``beta``, ``lr``,
    ``seconds`` (dim ``epoch``) and the minibatch ``step_elbo`` per step (dim ``step``; the
    ELBO per datapoint at that step's KL weight). ELBOs are in nats, higher is better."""
    h = asdict(history) if is_dataclass(history) else dict(history)
    epochs = np.asarray(h.get("epoch", []), dtype=np.int64)
    per_epoch = {k: ("epoch", np.asarray(h[k], dtype=np.float64))
                 for k in ("train_elbo", "val_elbo", "beta", "lr", "seconds")
                 if len(h.get(k, [])) == len(epochs) and len(epochs)}
    steps = -np.asarray(h.get("step_loss", []), dtype=np.float64)
    ds = xr.Dataset({**per_epoch, "step_elbo": ("step", steps)},
                    coords={"epoch": epochs, "step": np.arange(1, len(steps) + 1)})
    ds.attrs.update({"best_epoch": int(h.get("best_epoch", 0)), "best_val_elbo": float(h.get("best_val_elbo", -math.inf)),
                     "stopped_early": int(bool(h.get("stopped_early", False)))})
    return ds


def _draw(model, guide, args, num_samples, data_plate, vectorize, chunk) -> dict:
    """``{group: {site: (array, dim names)}}`` for ``num_samples`` draws, ``chunk`` of them
    vectorized at a time (or one at a time without ``vectorize``)."""
    with eval_mode(model, guide), pyro.validation_enabled(False):
        if not vectorize:
            return _merge_passes([_add_draw_dim(_one_pass(model, guide, args, None, None, data_plate))
                                  for _ in range(num_samples)])
        particle_dim = -(_max_plate_nesting(model, guide, args) + 1)
        chunk = chunk or _default_chunk(args)
        return _merge_passes([_one_pass(model, guide, args, min(chunk, num_samples - i), particle_dim, data_plate)
                              for i in range(0, num_samples, chunk)])


def _one_pass(model, guide, args, num_draws, particle_dim, data_plate) -> dict:
    """One run of guide and model on ``num_draws`` vectorized draws (None: a single draw, no
    plate). Returns ``{group: {site: (array, dim names)}}``; event dims are named None."""
    # sites marked for enumeration are drawn here (a posterior needs draws of y, not its sum)
    sample = importance_sample(model, guide, *args, num_particles=num_draws, particle_dim=particle_dim, enumerate=False)
    data_plate = data_plate or sample.data_plate
    out = {g: {} for g in ("posterior", "posterior_predictive", "log_likelihood", "observed_data")}
    for name, site in _model_sites(sample):
        if site["is_observed"] and not site["infer"].get("_deterministic"):
            obs = site["value"]
            replicated = site["fn"].sample().to(obs.dtype)  # x_rep ~ p(x | latents of this draw)
            out["observed_data"][name] = _labelled(obs, site, data_plate, values=True)
            out["posterior_predictive"][name] = _labelled(replicated, site, data_plate, values=True)
            out["log_likelihood"][name] = _labelled(sample.log_prob(site), site, data_plate, event_dim=0)
        else:
            out["posterior"][name] = _labelled(site["value"], site, data_plate, values=True)
    out["sample_stats"] = {"lp": _per_draw(sample, sample.model_sites), "log_q": _per_draw(sample, sample.guide_sites)}
    out["log_weight"] = _local_log_weight(sample, data_plate)
    return out


def _local_log_weight(sample, data_plate) -> dict:
    """``{"local": ([draw,] datapoint)}``: the sites inside the data plate's share of the
    log-weight, log p(x_i, z_i | theta) - log q(z_i | x_i, theta) per draw; empty without a
    data plate."""
    total = None
    for sites, sign in ((sample.model_sites, 1.0), (sample.guide_sites, -1.0)):
        for name, site in sites.items():
            if site["infer"].get("_deterministic"):
                continue
            array, dims = _per_datapoint({name: _labelled(sample.log_prob(site), site, data_plate, event_dim=0)})[name]
            if "datapoint" in dims:
                total = sign * array if total is None else total + sign * array
                names = dims
    return {} if total is None else {"local": (total.astype(np.float64), names)}


def _model_sites(sample):
    """The model's sample sites, without auxiliary guide sites."""
    return [(name, site) for name, site in sample.model_sites.items() if not site["infer"].get("is_auxiliary")]


def _labelled(t: torch.Tensor, site, data_plate: str | None, event_dim: int | None = None, values: bool = False):
    """``(array, names)``: ``t`` with each batch dim named by its plate (``draw`` for the
    draws, ``datapoint`` for the data plate) and size-1 dims outside any plate dropped; event dims
    are named None. With ``values``, entries that the site masks out become NaN."""
    event_dim = site["fn"].event_dim if event_dim is None else event_dim
    plates = {f.dim: f.name for f in site["cond_indep_stack"] if f.vectorized}
    batch_ndim = t.dim() - event_dim
    if values:
        t = latents.nan_where_masked(t, site, batch_ndim)
    names, keep = [], []
    for i in range(batch_ndim):
        plate = plates.get(i - batch_ndim)
        if plate is not None:
            names.append({PARTICLES: "draw", data_plate: "datapoint"}.get(plate, plate))
        elif t.shape[i] != 1:
            raise ValueError(f"site {site['name']!r} has a batch dimension of size {t.shape[i]} that belongs "
                             "to no plate; declare it with pyro.plate or make it an event dim with .to_event()")
        keep.append(plate is not None)
    squeeze = tuple(i for i, k in enumerate(keep) if not k)
    array = t.detach().squeeze(squeeze).cpu().numpy() if squeeze else t.detach().cpu().numpy()
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)  # netCDF has no boolean type
    return array, names + [None] * event_dim


def _per_draw(sample, sites: dict) -> tuple:
    """Sum of the sites' log-densities per draw: ``([draws], ["draw"])``, or a scalar for a
    single unvectorized draw."""
    # auxiliary sites count: they carry the density of AutoMultivariateNormal's joint draw
    total = sample.log_density({k: v for k, v in sites.items() if not v["infer"].get("_deterministic")})
    return total.detach().cpu().numpy().astype(np.float64), (["draw"] if sample.particle_dim is not None else [])


def _add_draw_dim(groups: dict) -> dict:
    return {g: {k: (a[None], ["draw", *n]) if g != "observed_data" else (a, n) for k, (a, n) in v.items()}
            for g, v in groups.items()}


def _merge_passes(passes: list) -> dict:
    """Concatenate the draws of several passes (``draw`` is every array's first dim)."""
    merged = {}
    for group, first in passes[0].items():
        if group == "observed_data":
            merged[group] = first
            continue
        merged[group] = {}
        for name, (array, names) in first.items():
            if names[:1] != ["draw"]:
                raise ValueError(f"site {name!r}: expected the draws as the first dimension, got {names}")
            merged[group][name] = (np.concatenate([p[group][name][0] for p in passes]), names)
    return merged


def _stack_time(variables: dict, reduce: bool = False) -> dict:
    """Stack per-step sites ``<base>_<t>`` (:func:`ppgen.evaluate.latents.step_groups`: any
    first index, the same shape) into ``<base>`` with a ``time`` dim after the plate dims, in
    step order; with ``reduce`` sum over time instead."""
    out = dict(variables)
    for base, names in latents.step_groups(variables, lambda n: (variables[n][0].shape,
                                                                  tuple(map(str, variables[n][1])))).items():
        dims = variables[names[0]][1]
        at = sum(d is not None for d in dims)  # after the plate dims, before the event dims
        arrays = [variables[n][0] for n in names]
        stacked = (np.sum(arrays, axis=0), dims) if reduce else (np.stack(arrays, axis=at), dims[:at] + ["time"] + dims[at:])
        for n in names:
            del out[n]
        out[base] = stacked
    return out


def _per_datapoint(variables: dict) -> dict:
    """Sum each log-density over every dim but ``draw`` and ``datapoint``."""
    out = {}
    for name, (array, dims) in variables.items():
        axes = tuple(i for i, d in enumerate(dims) if d not in ("draw", "datapoint"))
        out[name] = (array.sum(axis=axes) if axes else array, [d for d in dims if d in ("draw", "datapoint")])
    return out


def _dataset(variables: dict, coords: dict, vector_dim: str | None, chain: bool, names: "Dims") -> xr.Dataset:
    """A Dataset from ``{name: (array, dims)}``: event dims of vector variables are named
    ``vector_dim`` (``latent``, ``feature``) where sizes agree, ``<name>_dim_<i>`` otherwise;
    every dim then takes its name in ``names`` (:class:`Dims`), which no variable has."""
    data_vars, sizes = {}, {}
    for name, (array, dims) in variables.items():
        dims = _name_event_dims(name, array, dims, vector_dim, sizes)
        if chain:
            array, dims = array[None], ["chain", *dims]
        data_vars[names.variable(name)] = ([names.dim(d) for d in dims], array)
    coords = {names.dim(d): c for d, c in coords.items() if c is not None}
    used = {d for _, (dims, _) in data_vars.items() for d in dims}
    all_coords = {d: coords[d] for d in used if d in coords}
    for name, (dims, array) in data_vars.items():
        for d, n in zip(dims, array.shape):
            if d in all_coords and len(all_coords[d]) != n:
                all_coords[d] = np.arange(n)  # steps counted differently in another variable
            all_coords.setdefault(d, np.arange(n))
    return xr.Dataset(data_vars, coords=all_coords)


def _name_event_dims(name, array, dims, vector_dim, sizes) -> list:
    events = [i for i, d in enumerate(dims) if d is None]
    dims = list(dims)
    if vector_dim is not None and len(events) == 1 and "datapoint" in dims:
        size = array.shape[events[0]]
        if sizes.setdefault(vector_dim, size) == size:
            dims[events[0]] = vector_dim
            return dims
    if vector_dim is not None and len(events) == 1 and "datapoint" in dims:
        dims[events[0]] = f"{vector_dim}_{name}"  # a second code of another size (a hierarchy's layers)
        return dims
    for k, i in enumerate(events):
        dims[i] = f"{name}_dim_{k}"
    return dims


def latent_dim(var: xr.DataArray, dims: Dims | None = None) -> str | None:
    """The vector dim of a code variable: ``latent``, or ``latent_<name>`` for a code whose
    size differs from the first one's (the layers of a hierarchy); None for other variables.
    ``dims``: the names of the InferenceData it is from (:func:`dims_of`), where they differ."""
    latent = (dims or Dims()).latent
    return next((d for d in var.dims if d == latent or d.startswith(latent + "_")), None)


def _obs_size(groups) -> int | None:
    for group in groups.values():
        for array, dims in group.values():
            if "datapoint" in dims:
                return array.shape[dims.index("datapoint")]
    return None


def _constant_data(model, args, observed: set, n_obs, coords, dim_names: "Dims") -> xr.Dataset | None:
    """The model's arguments other than the observed variables (covariates, masks), named
    after the model's parameters."""
    names = _argument_names(model, len(args))
    data_vars = {}
    for name, a in zip(names, args):
        if name in observed or not isinstance(a, torch.Tensor):
            continue
        array = a.detach().cpu().numpy()
        array = array.astype(np.uint8) if array.dtype == np.bool_ else array
        dims = [dim_names.dim(f"{name}_dim_{i}") for i in range(array.ndim)]
        if array.ndim and array.shape[0] == n_obs:
            dims[0] = dim_names.datapoint
        data_vars[dim_names.variable(name)] = (dims, array)
    if not data_vars:
        return None
    return xr.Dataset(data_vars, coords={dim_names.datapoint: coords["datapoint"]} if n_obs is not None else None)


def _argument_names(model, n: int) -> list:
    try:
        params = list(inspect.signature(model.forward if hasattr(model, "forward") else model).parameters)
    except (TypeError, ValueError):
        params = []
    return (params + [f"arg{i}" for i in range(len(params), n)])[:n]


def _max_plate_nesting(model, guide, args) -> int:
    """How many plate dims the program uses (as Pyro's ``Predictive`` guesses it): the draws
    go to the next dim to the left."""
    sample = importance_sample(model, guide, *args, num_particles=None)
    dims = [-f.dim for sites in (sample.guide_sites, sample.model_sites) for site in sites.values()
            for f in site["cond_indep_stack"] if f.vectorized]
    return max(dims, default=0)


def _default_chunk(args) -> int:
    # keep a pass's arrays to roughly 10^6 entries per data tensor
    return max(1, int(1e6 // max(1, args[0].numel())))


def _name(fn) -> str:
    return getattr(fn, "__name__", type(fn).__name__)  # a plain function's own name, a module's class


def _attr(value):
    return value if isinstance(value, (str, int, float)) else json.dumps(value, default=str)


# -- importance sampling: k-hat, log p(x), ELBO gap ---------------------------------------------

def psis_khat(log_weights, flat_rtol: float = 1e-5) -> np.ndarray:
    """Pareto k-hat of each column of ``log_weights`` ``[K, N]`` (draws first) by ArviZ's PSIS.

    A column whose log-weights are equal to rounding (spread below ``flat_rtol`` relative to
    their size) comes from a guide equal to the posterior there: its weights are bounded
    and its k-hat is reported as -inf (PSIS cannot fit a tail to ties)."""
    lw = np.asarray(log_weights, dtype=np.float64)
    flat = (lw.max(0) - lw.min(0)) <= flat_rtol * np.maximum(1.0, np.abs(lw).max(0))
    khat = np.full(lw.shape[1], -np.inf)
    if not flat.all():
        khat[~flat] = az.psislw(lw[:, ~flat].T)[1]  # ArviZ wants the draws last
    return khat


def log_mean_exp_se(log_weights) -> tuple[np.ndarray, np.ndarray]:
    """``(log mean_k w_kn, its standard error)`` per column of ``[K, N]``: the importance-sampled
    log p(x_n) and its delta-method Monte Carlo standard error sd(w) / (sqrt(K) mean(w)). The
    standard error is only meaningful where k-hat < 0.7 (otherwise the variance may be infinite)."""
    lw = np.asarray(log_weights, dtype=np.float64)
    k = lw.shape[0]
    top = lw.max(0, keepdims=True)
    w = np.exp(lw - top)
    mean = w.mean(0)
    se = w.std(0, ddof=1) / (math.sqrt(k) * mean)
    return np.log(mean) + top[0], se


NO_FIT_DATA = ("not judged: the globals' k-hat needs the data the guide was trained on, "
               "importance_diagnostics(..., fit_data=TRAIN) or report(..., fit_data=TRAIN)")


def importance_diagnostics(model, guide, data, num_samples: int = 1000, *, fit_data=None, batch_size: int = 64,
                           chunk: int = 100, obs_index=None, dims: Dims | None = None) -> xr.Dataset:
    """Per-datapoint verdict on the guide, from ``num_samples`` draws per datapoint:

    * ``khat``: PSIS k-hat of the datapoint's importance weights (< 0.5 good, 0.5-0.7
      usable, > 0.7 bad);
    * ``log_px``, ``log_px_se``: the importance-sampled log-density of the datapoint (the
      IWAE estimate) and its Monte Carlo standard error;
    * ``elbo``: the mean log-weight; ``gap``: log_px - elbo >= 0.

    Every latent local (amortized guides): the weights are w = p(x_n, z) / q(z | x_n), so
    ``log_px`` is log p(x_n), ``gap`` estimates KL(q(z|x_n) || p(z|x_n)), ``khat`` judges q
    as a proposal for p(z | x_n). With global latents theta (found from the traces, listed in
    the attribute ``global_latents``): the weights are the local part given draws of the
    globals, w = p(y_n, z | theta) / q(z | y_n, theta) with (theta, z) ~ q, so ``log_px`` is
    the predictive density log E_q(theta)[p(y_n | theta)] and ``khat`` judges the local part
    of q for datapoint n, on held-out data as on the data it was fit to. The verdict on the
    globals, the attribute ``global_khat``, is the joint k-hat of p(theta, z, y) / q(theta, z | y)
    over ``num_samples`` draws given all of ``fit_data``, the data the guide was trained on:
    q(theta) approximates the posterior given those, and on other data the k-hat would judge it
    against a posterior it never saw. Without ``fit_data`` it is NaN and the attribute
    ``global_khat_note`` says why (for LOO with global latents see :func:`guide_corrected_loo`).

    The log-weights are :func:`ppgen.evaluate.heldout_log_weights`, the same that the IWAE
    numbers of :func:`ppgen.evaluate.evaluate` average. ``dims``: the dimension names of the
    InferenceData these go with (:func:`dims_of`)."""
    num_samples, batch_size = positive_int(num_samples, "num_samples"), positive_int(batch_size, "batch_size")
    chunk = positive_int(chunk, "chunk")
    args = model_args(data)
    global_sites = global_latent_sites(model, guide, args)
    lw = heldout_log_weights(model, guide, args, num_samples, batch_size, chunk,
                             local=bool(global_sites)).double().cpu().numpy()
    log_px, se = log_mean_exp_se(lw)
    elbo = lw.mean(0)
    obs = np.arange(lw.shape[1]) if obs_index is None else np.asarray(obs_index)
    dims = dims or Dims()
    attrs = {"num_samples": int(num_samples), "khat_good": KHAT_GOOD, "khat_bad": KHAT_BAD,
             "global_latents": ", ".join(global_sites), **dims.attrs()}
    if global_sites and fit_data is not None:
        joint = joint_log_weights(model, guide, model_args(fit_data), num_samples).double().cpu().numpy()
        attrs["global_khat"] = float(psis_khat(joint[:, None])[0])
    elif global_sites:
        attrs["global_khat"] = float("nan")
        attrs["global_khat_note"] = NO_FIT_DATA
    return xr.Dataset(
        {"khat": (dims.datapoint, psis_khat(lw)), "log_px": (dims.datapoint, log_px),
         "log_px_se": (dims.datapoint, se), "elbo": (dims.datapoint, elbo), "gap": (dims.datapoint, log_px - elbo)},
        coords={dims.datapoint: obs}, attrs=attrs,
    )


def khat_bands(khat) -> dict:
    """Share of datapoints per k-hat band: ``good`` (< 0.5), ``ok`` (0.5-0.7), ``bad``
    (> 0.7, or not finite-and-high: a failed tail fit counts as bad)."""
    k = np.asarray(khat, dtype=np.float64).ravel()
    good = k < KHAT_GOOD
    ok = (k >= KHAT_GOOD) & (k <= KHAT_BAD)
    return {"good": float(good.mean()), "ok": float(ok.mean()), "bad": float(1.0 - good.mean() - ok.mean())}


def worst_datapoints(diagnostics: xr.Dataset, n: int = 8) -> xr.Dataset:
    """The ``n`` datapoints with the highest k-hat (ties broken by the larger gap)."""
    order = np.lexsort((-diagnostics["gap"].values, -np.nan_to_num(diagnostics["khat"].values, nan=np.inf)))
    return diagnostics.isel({dims_of(diagnostics).datapoint: order[:n]})


# -- PSIS-LOO for global latents, corrected for draws from q -------------------------------------

def guide_corrected_loo(idata: az.InferenceData, var_name: str | None = None) -> "az.ELPDData":
    """PSIS-LOO of a model with global latents theta whose draws come from a guide q rather
    than the posterior (Magnusson et al., 2019). ``idata`` is :func:`to_inference_data` of the
    data the guide was trained on: q(theta) approximates the posterior given those data, and
    LOO leaves out one of them.

    With local latents z_i too, the ``log_likelihood`` group of :func:`to_inference_data`
    holds p^(y_i | theta_s) = p(y_i, z_si | theta_s) / q(z_si | y_i, theta_s) and ``lp``,
    ``log_q`` are joint over (theta, z): the same weights then target p(theta, z_-i | y_-i)
    q(z_i | y_i, theta) on the joint space, where the mean of p^ is p(y_i | y_-i), so the
    formula below holds as it stands (the k-hats say what the extra noise costs).

    With r_s = p(theta_s, y) / q(theta_s) the posterior's importance ratio, the leave-one-out
    weights of draw s for datapoint i are r_s / p(y_i | theta_s); they are Pareto-smoothed per
    datapoint (their k-hat is ``pareto_k``) and elpd_i = log sum_s w~_si p(y_i | theta_s).
    ``guide_k`` is the k-hat of r itself: above 0.7 q is too far from the posterior for any
    of this to be reliable. ``p_loo`` uses the lppd under the r-reweighted draws.
    Returns an ArviZ ``ELPDData`` (log scale), so ``az.compare``-style tools read it."""
    datapoint = dims_of(idata).datapoint
    if all(datapoint in v.dims for v in idata.posterior.data_vars.values()):
        raise ValueError("guide_corrected_loo corrects draws of global latents, and every latent of this model is "
                         "local (per datapoint): there is nothing to leave out but x_i itself; use "
                         "importance_diagnostics (its log_px is elpd_i = log p(x_i), with a k-hat per datapoint)")
    ll = _log_likelihood(idata, var_name)
    log_r = (idata.sample_stats["lp"] - idata.sample_stats["log_q"]).stack(__sample__=("chain", "draw")).values
    lw_post, guide_k = az.psislw(log_r[None, :])
    lw_loo, pareto_k = az.psislw(log_r[None, :] - ll)
    loo_i = _logsumexp(lw_loo + ll)
    lppd = _logsumexp(lw_post + ll).sum()
    n, s = ll.shape
    good_k = min(1 - 1 / np.log10(s), KHAT_BAD)
    return az.ELPDData(
        data=[loo_i.sum(), math.sqrt(n * np.var(loo_i)), lppd - loo_i.sum(), s, n,
              bool(np.any(pareto_k > good_k) or guide_k[0] > KHAT_BAD),
              xr.DataArray(loo_i, dims=datapoint, name="loo_i"), xr.DataArray(pareto_k, dims=datapoint, name="pareto_k"),
              "log", good_k, float(guide_k[0])],
        index=["elpd_loo", "se", "p_loo", "n_samples", "n_data_points", "warning", "loo_i", "pareto_k",
               "scale", "good_k", "guide_k"],
    )


def _log_likelihood(idata, var_name) -> np.ndarray:
    group = idata.log_likelihood
    if var_name is None:
        if len(group.data_vars) != 1:
            raise ValueError(f"several observed variables {list(group.data_vars)}; pass var_name")
        var_name = next(iter(group.data_vars))
    return group[var_name].stack(__sample__=("chain", "draw")).transpose(..., "__sample__").values


def _logsumexp(a, axis=-1):
    top = a.max(axis=axis, keepdims=True)
    return np.log(np.exp(a - top).sum(axis=axis)) + top.squeeze(axis)


# -- latent-space health -------------------------------------------------------------------------

@torch.no_grad()
def latent_kl(model, guide, data, num_samples: int = 20, *, data_plate: str | None = None,
              dims: Dims | None = None) -> xr.Dataset:
    """Monte Carlo KL(q(z | x) || p(z | ...)) = E_q[log q - log p] per datapoint for every
    local latent variable ``<name>`` (``[datapoint]``, or ``[datapoint, time]`` for per-step sites: a
    step whose KL is ~0 for all data has collapsed to the prior). Where q and p factorise over
    the vector's dims, ``<name>_per_dim`` (``[datapoint, (time,) latent]``) is the KL between the
    per-dim marginals; summed over dims it equals the total for factorised q. Masked steps
    are NaN. ``dims``: the dimension names to use (those of the InferenceData these go with;
    by default names that none of these variables takes)."""
    args = model_args(data)
    with eval_mode(model, guide), pyro.validation_enabled(False):
        particle_dim = -(_max_plate_nesting(model, guide, args) + 1)
        sample = importance_sample(model, guide, *args, num_particles=num_samples, particle_dim=particle_dim,
                                   enumerate=False)  # per-site KLs of drawn values, enumerated sites included
        data_plate = data_plate or sample.data_plate
        total, per_dim = {}, {}
        for name, site in _model_sites(sample):
            if site["is_observed"] or name not in sample.guide_sites:
                continue
            q_site = sample.guide_sites[name]
            diff = sample.log_prob(q_site) - sample.log_prob(site)
            diff = latents.nan_where_masked(diff, site, diff.dim())
            total[name] = _labelled(diff, site, data_plate, event_dim=0)
            marginal = _marginal_kl(q_site["fn"], site["fn"], site["value"])
            if marginal is not None:
                marginal = latents.nan_where_masked(marginal, site, marginal.dim() - 1)
                per_dim[name] = _labelled(marginal, site, data_plate, event_dim=1)
    out = {}
    for suffix, variables in (("", total), ("_per_dim", per_dim)):
        for name, (array, names) in _stack_time(variables).items():
            if "datapoint" in names:
                out[name + suffix] = (_mean_over_draws(array, names), [d for d in names if d != "draw"])
    dims = dims or Dims.avoiding(out)
    ds = _dataset(out, {"time": _step_coords([total])}, "latent", False, dims)
    ds.attrs.update(dims.attrs())
    return ds


def _mean_over_draws(array, dims):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # masked steps are NaN in every draw
        return np.nanmean(array, axis=dims.index("draw"))


def _marginal_kl(q, p, z):
    lq, lp = marginal_log_prob(q, z), marginal_log_prob(p, z)
    return None if lq is None or lp is None else lq - lp


def code_variable(idata: az.InferenceData, var: str | None = None) -> str:
    """``var``, or the one posterior variable that is a code: per datapoint, with a
    ``latent`` dim (the name is found, not assumed); ``ValueError`` listing them if several."""
    if var is not None:
        return var
    dims = dims_of(idata)
    codes = [name for name, v in idata.posterior.data_vars.items() if dims.datapoint in v.dims and latent_dim(v, dims)]
    if len(codes) != 1:
        raise ValueError(f"the posterior has the code variables {codes}; pass var= to choose one")
    return codes[0]


def observed_variable(idata: az.InferenceData, var: str | None = None) -> str | None:
    """``var``, or the one observed variable (None when there are several or none)."""
    if var is not None:
        return var
    names = list(idata.observed_data.data_vars) if "observed_data" in idata.groups() else []
    return names[0] if len(names) == 1 else None


def latent_activity(idata: az.InferenceData, var: str | None = None) -> xr.DataArray:
    """Cov_x(E_q[z | x]) per latent dim of the code ``var`` (default: :func:`code_variable`)
    from the posterior draws: :func:`ppgen.evaluate.latent_activity` (the per-datapoint draw
    means' variance across data and steps, less their Monte Carlo noise)."""
    z = idata.posterior[code_variable(idata, var)]
    dim = latent_dim(z, dims_of(idata))
    draws = z.stack(__sample__=("chain", "draw")).transpose("__sample__", ..., dim)
    activity = latents.latent_activity(torch.as_tensor(draws.values))
    return xr.DataArray(activity.numpy(), dims=[dim], coords={dim: z[dim].values})


def active_units(idata: az.InferenceData, var: str | None = None, threshold: float = 0.01) -> int:
    """Number of latent dims with activity > ``threshold`` (collapsed dims copy the prior)."""
    return latents.active_units(torch.as_tensor(latent_activity(idata, var).values), threshold)


def code_sparsity(idata: az.InferenceData, var: str | None = None, threshold: float = 1e-2) -> float:
    """Share of drawn code entries with |z| <= threshold (exact zeros for spike-and-slab)."""
    return latents.code_sparsity(torch.as_tensor(idata.posterior[code_variable(idata, var)].values), threshold)


# -- posterior predictive checks ----------------------------------------------------------------

def _vector_statistics(x: xr.DataArray, d: Dims) -> dict:
    return {"mean_per_datapoint": x.mean(d.feature), "sd_per_datapoint": x.std(d.feature),
            "mean_per_feature": x.mean(d.datapoint)}


def _sequence_statistics(x: xr.DataArray, d: Dims) -> dict:
    notes = x.sum(d.feature, skipna=False)  # NaN on padded frames
    changes = abs(x.diff(d.time)).sum(d.feature, skipna=False)  # keys switched on or off: the dynamics
    return {"notes_per_frame": notes.mean(d.time), "note_changes_per_frame": changes.mean(d.time),
            "mean_per_key": x.mean((d.datapoint, d.time))}


def _scalar_statistics(x: xr.DataArray, d: Dims) -> dict:
    return {x.name or "value": x}


def ppc_statistics(idata: az.InferenceData, var: str | None = None) -> az.InferenceData:
    """Test statistics T(x) of the observed and the replicated data, as an InferenceData
    for ``az.plot_ppc``: for sequences (``time`` dim) the notes per frame and the keys that
    change from one frame to the next, per sequence, and the mean of each key; for vectors
    (``feature`` dim) the mean and sd of each datapoint and the mean of each feature;
    otherwise the data itself."""
    var = var or next(iter(idata.observed_data.data_vars))
    observed, replicated = idata.observed_data[var], idata.posterior_predictive[var]
    d = dims_of(idata)
    if d.time in observed.dims and d.feature in observed.dims:
        statistics = _sequence_statistics
    elif d.feature in observed.dims:
        statistics = _vector_statistics
    else:
        statistics = _scalar_statistics
    return az.InferenceData(posterior_predictive=xr.Dataset(statistics(replicated, d)),
                            observed_data=xr.Dataset(statistics(observed, d)))


# -- figures ------------------------------------------------------------------------------------

def plot_khat(diagnostics: xr.Dataset):
    """k-hat per datapoint (ArviZ's plot, with the 0.5 and 0.7 thresholds) and the ELBO gap
    against k-hat. k-hat = -inf (exact guide) is drawn at -0.5."""
    import matplotlib.pyplot as plt

    khat = np.maximum(diagnostics["khat"].values, -0.5)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [2, 1]})
    with warnings.catch_warnings():
        # ArviZ prefers ELPDData (per-datapoint VI k-hats are not LOO) and uses a deprecated matplotlib call
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        az.plot_khat(khat, ax=ax, show_bins=False, markersize=8)
    for level, color in ((KHAT_GOOD, "C2"), (KHAT_BAD, "C3")):
        ax.axhline(level, color=color, ls="--", lw=1)
        ax2.axvline(level, color=color, ls="--", lw=1)
    ax.set_title(f"PSIS k-hat of p(x, z) / q(z | x), {diagnostics.attrs.get('num_samples', '?')} draws per datapoint")
    ax.set_ylabel("k-hat")
    ax2.scatter(khat, diagnostics["gap"].values, s=8, alpha=0.6)
    ax2.set_xlabel("k-hat")
    ax2.set_ylabel("log p(x) - ELBO (nats)")
    ax2.set_title("ELBO gap")
    fig.tight_layout()
    return fig


def plot_ppc(idata: az.InferenceData, var: str | None = None, num_pp_samples: int = 50):
    """One ``az.plot_ppc`` panel per test statistic of :func:`ppc_statistics`."""
    import matplotlib.pyplot as plt

    stats = ppc_statistics(idata, var)
    names = list(stats.observed_data.data_vars)
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.4), squeeze=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # KDEs of near-constant statistics warn; the plot still says it
        az.plot_ppc(stats, var_names=names, ax=axes[0], num_pp_samples=min(num_pp_samples, stats.posterior_predictive.sizes["draw"]),
                    random_seed=0, legend=True)
    for ax, name in zip(axes[0], names):
        ax.set_title(name.replace("_", " "))
    fig.tight_layout()
    return fig


def plot_training(training: xr.Dataset):
    """ELBO per epoch (train and validation) and per step."""
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 3.4))
    for name, label in (("train_elbo", "train"), ("val_elbo", "validation")):
        if name in training:
            ax.plot(training["epoch"], training[name], label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("ELBO per datapoint (nats)")
    ax.legend()
    steps = training["step_elbo"]
    if steps.size:
        ax2.plot(training["step"], steps, lw=0.5, alpha=0.4, color="C0")
        window = max(1, steps.size // 50)
        ax2.plot(training["step"], steps.rolling(step=window, min_periods=1).mean(), color="C0")
        low = float(np.nanpercentile(steps, 5))
        ax2.set_ylim(low - 0.1 * abs(low), float(np.nanmax(steps)) + 0.05 * abs(low))
    ax2.set_xlabel("step")
    ax2.set_ylabel("minibatch ELBO (nats)")
    fig.tight_layout()
    return fig


def plot_kl(kl: xr.Dataset):
    """Mean KL per latent dim (bars) and, for sequence latents, per time step."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    d = dims_of(kl)
    panels = [name for name in kl.data_vars if latent_dim(kl[name], d)]
    panels += [name for name in kl.data_vars if d.time in kl[name].dims and not latent_dim(kl[name], d)]
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(5.5 * max(1, len(panels)), 3.2), squeeze=False)
    for ax, name in zip(axes[0], panels):
        values, dim = kl[name], latent_dim(kl[name], d)
        if dim:
            mean = values.mean([d for d in values.dims if d != dim])
            ax.bar(mean[dim].values, mean.values)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel("latent dimension")
            ax.set_title(f"KL per dimension of {name.removesuffix('_per_dim')} (nats)")
        else:
            mean = values.mean(d.datapoint)
            ax.plot(mean[d.time].values, mean.values)
            ax.set_xlabel("time step")
            ax.set_title(f"KL per time step of {name} (nats)")
    fig.tight_layout()
    return fig


# -- helpers ------------------------------------------------------------------------------------

def write_netcdf(idata: az.InferenceData, path) -> Path:
    """``idata.to_netcdf`` into a temporary file beside ``path``, renamed over it when complete
    (netCDF needs a file name, so :func:`ppgen.infer.checkpoint.atomic_write` cannot stream it)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        idata.to_netcdf(str(tmp))
        os.chmod(tmp, new_file_mode())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


__all__ = ["KHAT_GOOD", "KHAT_BAD", "Dims", "dims_of", "is_inference_data", "LOCAL_LOO_NOTE", "to_inference_data", "training_dataset", "psis_khat",
           "log_mean_exp_se", "importance_diagnostics", "khat_bands", "worst_datapoints", "guide_corrected_loo",
           "latent_kl", "latent_dim", "code_variable", "observed_variable", "latent_activity", "active_units", "code_sparsity", "ppc_statistics", "plot_khat",
           "plot_ppc", "plot_training", "plot_kl", "write_netcdf"]
