"""The health of the latent code, one set of metrics for every caller (:func:`ppgen.evaluate`
and the diagnostics report alike).

Array-level metrics take draws ``z [S, *obs, D]`` from q(z | x) (S draws first, as every
draw tensor in ppgen; ``*obs`` the datapoints, and steps for sequence latents; NaN marks
padded steps and is ignored):

* :func:`latent_activity`: Cov_x(E_q[z | x]) per latent dim (Burda et al., 2016); a
  collapsed dimension copies the prior whatever x is and scores ~0;
* :func:`active_units`: how many dims have activity above a threshold (0.01);
* :func:`code_sparsity`: the share of code entries with |z| <= threshold (exact zeros for
  spike-and-slab codes).

Guide-level helpers draw from a guide: :func:`sample_latents`, :func:`posterior_mean` (exact
where the site's distribution has a mean) and :func:`guide_activity`. Their ``site`` is found
from the guide's trace where not given (:func:`local_vector_sites`): no site name is assumed.
"""
from __future__ import annotations

import re

import pyro
import torch

from ..distributions.declared import declared_mask
from ..distributions.site_sequence import stack_steps
from ..infer.importance import guide_draws, in_data_plate
from ..nn import eval_mode
from ..priors import Prior


def latent_activity(draws: torch.Tensor | None = None, *, means: torch.Tensor | None = None) -> torch.Tensor:
    """Cov_x(E_q[z | x]) per latent dim: ``[D]``.

    With the exact posterior means ``means [*obs, D]`` (where q has them), their variance
    across data. Otherwise from ``draws [S, *obs, D]``: the variance across data of the
    per-datapoint draw means, less the part that their Monte Carlo noise adds (the mean
    within-datapoint variance / S), so S draws of a collapsed dimension do not look active."""
    if means is not None:
        return _nanvar(means.reshape(-1, means.shape[-1]))
    if draws is None:
        raise ValueError("give the draws [S, *obs, D] or the exact means [*obs, D]")
    s = draws.shape[0]
    flat = draws.reshape(s, -1, draws.shape[-1])  # [S, obs, D]
    noise = _nanvar(flat).nanmean(0) / s
    return _nanvar(flat.nanmean(0)) - noise


def active_units(activity: torch.Tensor, threshold: float = 0.01) -> int:
    """Number of latent dims with activity > ``threshold`` (collapsed dims copy the prior)."""
    return int((activity > threshold).sum())


def code_sparsity(draws: torch.Tensor, threshold: float = 1e-2) -> float:
    """Share of drawn code entries with |z| <= ``threshold`` (NaN entries, padding, left out)."""
    z = draws.abs()
    z = z[~torch.isnan(z)]
    return float((z <= threshold).double().mean())


def has_sparse_prior(model) -> bool:
    """The one rule for "report code sparsity": the model's prior is a ppgen
    :class:`~ppgen.priors.Prior` whose class says it makes sparse codes (``Prior.sparse``)."""
    prior = getattr(model, "prior", None)  # any Pyro program may be evaluated; only ppgen priors declare this
    return isinstance(prior, Prior) and prior.sparse


_STEP_SITE = re.compile(r"^(?P<base>.+)_(?P<t>\d+)$")


def step_site(name: str) -> tuple[str, int] | None:
    """``(base, t)`` for a per-step site named ``<base>_<t>`` (``z_3`` -> ``("z", 3)``), the
    naming of sequence models (:class:`ppgen.distributions.SiteSequence`); None otherwise."""
    m = _STEP_SITE.match(name)
    return (m["base"], int(m["t"])) if m else None


def step_groups(names, shape_of=None) -> dict[str, list[str]]:
    """Per-step sites grouped into variables: ``{base: [sites in step order]}`` for every base
    with at least two sites ``<base>_<t>`` (any first index: Pyro's DMM counts ``z_1 .. z_T``;
    gaps allowed), whatever plate or ``pyro.markov`` structure produced them, unless a site is
    also called ``<base>`` itself or (with ``shape_of``, a site's event shape) the steps'
    shapes differ: those stay separate sites."""
    names = list(names)
    steps: dict = {}
    for name in names:
        step = step_site(name)
        if step is not None:
            steps.setdefault(step[0], []).append((step[1], name))
    groups = {}
    for base, members in steps.items():
        if len(members) < 2 or base in names:
            continue
        if shape_of is not None and len({tuple(shape_of(n)) for _, n in members}) != 1:
            continue
        groups[base] = [n for _, n in sorted(members)]
    return groups


def latent_variables(guide, *args) -> dict[str, list[str]]:
    """The guide's local vector latents as variables: ``{name: [sites]}``, one site each,
    except that per-step sites ``<base>_<t>`` (:func:`step_groups`) are one variable
    ``<base>`` (a sequence model's z_t), in trace order."""
    with keep_rng(args), pyro.validation_enabled(False), eval_mode(guide):
        draws = guide_draws(guide, *args, num_particles=None)
    sites = _local_vectors(draws)
    groups = step_groups(sites, lambda n: draws[n]["fn"].event_shape)
    member = {site: base for base, members in groups.items() for site in members}
    variables = {}
    for name in sites:
        if name in member:
            variables.setdefault(member[name], groups[member[name]])
        else:
            variables[name] = [name]
    return variables


@torch.no_grad()
def variable_draws(guide, *args, sites: list[str], num_samples: int = 1) -> torch.Tensor:
    """Draws of a latent variable from one vectorized guide run: ``[S, N, D]`` for one site,
    ``[S, N, T, D]`` for per-step sites (stacked along time); NaN where the site is masked
    (padded steps), which the metrics here ignore."""
    with pyro.validation_enabled(False), eval_mode(guide):
        draws = guide_draws(guide, *args, num_particles=num_samples)
    values = [nan_where_masked(draws[name]["value"], draws[name]) for name in sites]
    return values[0] if len(values) == 1 else stack_steps(values)


def site_mask(msg) -> torch.Tensor | None:
    """Where a site's log-density counts (True) and where it is masked out, from every place
    Pyro lets a user put a mask: ``poutine.mask`` (and ``obs_mask``, which Pyro turns into
    masked sites) and the site's distribution, however wrapped (``d.mask(m).to_event(1)``,
    :func:`~ppgen.distributions.declared.declared_mask`). A bool tensor broadcastable to the
    site's batch shape; None when nothing is masked."""
    masks = [m for m in (msg.get("mask"), declared_mask(msg["fn"])) if isinstance(m, torch.Tensor)]
    if not masks:
        return None
    mask = masks[0]
    for m in masks[1:]:
        mask = mask & m
    return None if bool(mask.all()) else mask


def nan_where_masked(t: torch.Tensor, msg, batch_ndim: int | None = None) -> torch.Tensor:
    """``t`` (a site's value, or anything with its batch dims first and ``batch_ndim`` of them,
    by default the site's) with the entries its mask leaves out set to NaN: padded steps are
    missing values, not zeros, in every metric."""
    mask = site_mask(msg)
    if mask is None:
        return t
    batch_ndim = t.dim() - msg["fn"].event_dim if batch_ndim is None else batch_ndim
    if mask.dim() > batch_ndim:  # an observed value has no draw dim where the site's mask has one: same in each draw
        mask = mask.reshape((-1,) + mask.shape[mask.dim() - batch_ndim:]).any(0)
    mask = mask.expand(t.shape[:batch_ndim]).reshape(t.shape[:batch_ndim] + (1,) * (t.dim() - batch_ndim))
    return torch.where(mask, t.to(torch.promote_types(t.dtype, torch.float32)), torch.nan)


@torch.no_grad()
def local_vector_sites(guide, *args) -> list[str]:
    """The guide's latent sites that active units and sparsity apply to, in trace order:
    inside the data plate (one code per datapoint; global latents have no spread across
    data) with one event dim (a code vector ``[N, D]``); auxiliary sites (an autoguide's
    joint draw) left out."""
    with keep_rng(args), pyro.validation_enabled(False), eval_mode(guide):
        return _local_vectors(guide_draws(guide, *args, num_particles=None))


def _local_vectors(sites: dict) -> list[str]:
    return [name for name, msg in sites.items()
            if not msg["is_observed"] and not msg["infer"].get("is_auxiliary") and in_data_plate(msg)
            and msg["fn"].event_dim == 1]


def keep_rng(args):
    """Restore torch's random state (CPU, and the GPUs that ``args`` are on) on exit: a run
    that only discovers sites must not change the numbers of the runs after it."""
    devices = sorted({a.device.index or 0 for a in args if isinstance(a, torch.Tensor) and a.is_cuda})
    return torch.random.fork_rng(devices=devices)


def _one_site(guide, args, site: str | None) -> str:
    if site is not None:
        return site
    sites = local_vector_sites(guide, *args)
    if len(sites) != 1:
        raise ValueError(f"the guide has the local vector latent sites {sites}; pass site= to choose one")
    return sites[0]


@torch.no_grad()
def sample_latents(guide, *args, site: str | None = None, num_samples: int = 1) -> torch.Tensor:
    """``num_samples`` draws of latent ``site`` (default: the guide's one local vector site)
    from the guide run on ``args``: ``[S, N, ...]``, vectorized (one guide run, the draws in a
    plate left of the data plate)."""
    site = _one_site(guide, args, site)
    with pyro.validation_enabled(False), eval_mode(guide):
        return guide_draws(guide, *args, num_particles=num_samples)[site]["value"]


@torch.no_grad()
def posterior_mean(guide, *args, site: str | None = None, num_samples: int = 32) -> torch.Tensor:
    """E_q[z | x] per datapoint ``[N, ...]``: the mean of the site's distribution where it has
    one in closed form, otherwise the mean of ``num_samples`` draws."""
    site = _one_site(guide, args, site)
    mean = _exact_mean(guide, args, site)
    return mean if mean is not None else sample_latents(guide, *args, site=site, num_samples=num_samples).mean(0)


@torch.no_grad()
def guide_activity(guide, *args, site: str | None = None, num_samples: int = 32) -> torch.Tensor:
    """:func:`latent_activity` of the guide's site on ``args``: from the exact posterior means
    where q has them, otherwise from ``num_samples`` draws per datapoint."""
    site = _one_site(guide, args, site)
    mean = _exact_mean(guide, args, site)
    if mean is not None:
        return latent_activity(means=mean)
    return latent_activity(sample_latents(guide, *args, site=site, num_samples=num_samples))


def _exact_mean(guide, args, site) -> torch.Tensor | None:
    """The mean of q's distribution at ``site`` for one guide run, or None where torch has no
    closed form (a flow's ``TransformedDistribution`` raises ``NotImplementedError``) or where
    it is not E_q[z | x]: a site drawn after another latent (a lower layer of a hierarchy,
    a local latent given global ones) has a distribution given that draw, whose mean varies
    with it."""
    with pyro.validation_enabled(False), eval_mode(guide):
        sites = guide_draws(guide, *args, num_particles=None)
        latent = [name for name, msg in sites.items() if not msg["is_observed"]]
        if latent[:1] != [site]:
            return None
        fn = sites[site]["fn"]
        try:
            return nan_where_masked(fn.mean, sites[site])
        except NotImplementedError:
            return None


def _nanvar(t: torch.Tensor) -> torch.Tensor:
    """Unbiased variance over dim 0, ignoring NaN (NaN where fewer than 2 values remain)."""
    n = (~torch.isnan(t)).sum(0)
    centred = t - t.nanmean(0, keepdim=True)
    var = torch.nansum(centred.square(), 0) / (n - 1).clamp(min=1)
    return torch.where(n > 1, var, torch.nan)


__all__ = ["latent_activity", "active_units", "code_sparsity", "local_vector_sites", "latent_variables", "variable_draws", "step_site", "step_groups", "site_mask", "nan_where_masked", "keep_rng", "sample_latents", "posterior_mean", "guide_activity",
           "has_sparse_prior"]
