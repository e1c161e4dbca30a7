"""Importance sampling with the guide as proposal: K draws z_k ~ q(z | x), the model replayed
on each, and the log-weights

    log w_k = log p(x, z_k) - log q(z_k | x).

Every importance weight in ppgen comes from :func:`importance_sample`: the IWAE objective,
the held-out bounds of :mod:`ppgen.evaluate`, the per-step weights of sequence models, and
the diagnostics' k-hat, InferenceData and KL.

One axis convention, Pyro's for vectorized particles: draws first. The K draws are a plate
at ``particle_dim`` (-2 by default, just left of the data plate), so every per-datapoint
tensor here is ``[K, N]``. The data plate is not named by convention but found: it is the
plate at dim -1, the innermost. (ArviZ wants draws last; transpose only where it is called.)

Discrete guide sites marked for parallel enumeration (``config_enumerate``, as for Pyro's
``TraceEnum_ELBO``) are summed exactly, not sampled: the guide runs under Pyro's enumeration
with the enumeration dims left of the draws', so a site y gets every value at once and the
sites after it (z ~ q(z | x, y)) one draw per value. The log-weight of draw k is then

    log w_k = log sum_y p(x, y, z_ky) / q(z_ky | x, y),

q(y | x) left out (y is summed, not proposed): still an unbiased estimate of p(x).
"""
from __future__ import annotations

import pyro
import torch
from pyro import poutine

from .draws import PARTICLES, ProgramSet, draw_sites
from .precision import outside_autocast
from .record import run_guide, run_pair, sample_sites, site_log_prob


class ImportanceSample:
    """K vectorized draws z ~ q(z | x) and the model replayed on them.

    ``model_sites`` and ``guide_sites`` map site names to Pyro messages (``value``, ``fn``,
    ``is_observed``, ``infer``, ``scale``, ``mask``, ``cond_indep_stack``; plate subsample
    sites left out). ``particle_dim`` is the batch dim of the draws, None for a single draw
    without a plate. ``enumerated``: the guide sites whose values were enumerated (every
    value of the site along an enumeration dim left of ``particle_dim``), summed out of the
    weights exactly (see the module docstring).
    """

    def __init__(self, model_sites: dict, guide_sites: dict, num_particles: int | None, particle_dim: int | None):
        self.model_sites, self.guide_sites = model_sites, guide_sites
        self.num_particles, self.particle_dim = num_particles, particle_dim
        self.enumerated = tuple(name for name, msg in guide_sites.items()
                                if msg["infer"].get("_enumerate_dim") is not None)
        for name in self.enumerated:
            plates = [f.name for f in guide_sites[name]["cond_indep_stack"] if f.vectorized and f.name != PARTICLES]
            if not in_data_plate(guide_sites[name]) or len(plates) > 1:
                raise ValueError(f"enumerated site {name!r} is in the plates {plates}: ppgen sums enumerated sites out "
                                 "per datapoint, so they must be in the data plate (the plate at dim -1) and no other")
        self._log_probs: dict = {}

    def log_prob(self, msg) -> torch.Tensor:
        """The site's log-density, scaled and masked (computed once per site)."""
        key = id(msg)
        if key not in self._log_probs:
            self._log_probs[key] = site_log_prob(msg)
        return self._log_probs[key]

    @property
    def data_plate(self) -> str | None:
        """The name of the plate at dim -1 (the data plate), None if no site is in one."""
        for msg in (*self.model_sites.values(), *self.guide_sites.values()):
            for f in msg["cond_indep_stack"]:
                if f.vectorized and f.dim == -1 and f.name != PARTICLES:
                    return f.name
        return None

    def site_terms(self) -> dict:
        """Each site's share of log w per draw and datapoint, ``{name: [K, N]}``: log p for
        observed sites, log p - log q for latent sites, -log q for sites only the guide has
        (auxiliary). Each log-density is summed over every dim but the draws' and the data
        plate's (masks and scales applied, so padded sequence steps add 0); the shares sum to
        :meth:`log_weights`. A latent outside the data plate (a global latent) has no
        per-datapoint share and raises ``ValueError``.

        With enumerated sites y, each share is the site's term averaged over y under
        r_k(y) = w_ky / sum_y w_ky (the posterior of y given x and the draw), and the
        enumerated site's share also holds the entropy of r_k: it is -KL(r_k || p(y)), and the
        shares still sum to :meth:`log_weights`."""
        terms = self._raw_terms(local=False)
        return self._averaged_over_enumeration(terms) if self.enumerated else terms

    def log_weights(self) -> torch.Tensor:
        """log w[k, n] = log p(x_n, z_kn) - log q(z_kn | x_n): ``[K, N]`` (enumerated sites
        summed out: log sum_y p(x_n, y, z_kyn) / q(z_kyn | x_n, y))."""
        return self._sum_out_enumeration(sum(self._raw_terms(local=False).values()))

    def local_log_weights(self) -> torch.Tensor:
        """The shares of the sites inside the data plate only: ``[K, N]``. With global latents
        theta_k drawn too, log p(x_n, z_kn | theta_k) - log q(z_kn | x_n, theta_k), whose
        exponent is an unbiased estimate of p(x_n | theta_k); without globals, :meth:`log_weights`."""
        return self._sum_out_enumeration(sum(self._raw_terms(local=True).values()))

    def _raw_terms(self, local: bool) -> dict:
        """``{name: term}``, each site's log-density summed to ``[*enum, K, N]`` (the guide's
        share negated; an enumerated guide site has none: y is summed, not proposed)."""
        terms = {}
        for sites, sign in ((self.model_sites, 1.0), (self.guide_sites, -1.0)):
            for name, msg in sites.items():
                if (local and not in_data_plate(msg)) or (sign < 0 and name in self.enumerated):
                    continue
                term = sign * self._per_datapoint(name, msg)
                terms[name] = terms[name] + term if name in terms else term
        return terms

    def _enum_dims(self, t: torch.Tensor) -> list:
        """The enumeration dims of ``t`` (those left of the draws')."""
        return list(range(t.dim() + self.particle_dim)) if self.enumerated else []

    def _sum_out_enumeration(self, total) -> torch.Tensor:
        if not self.enumerated:
            return total
        return torch.logsumexp(total, self._enum_dims(total)) if self._enum_dims(total) else total

    def _averaged_over_enumeration(self, terms: dict) -> dict:
        total = sum(terms.values())
        dims = self._enum_dims(total)
        if not dims:
            return terms
        log_w = torch.logsumexp(total, dims, keepdim=True)
        r = (total - log_w).exp()  # r_k(y): the exact posterior of the enumerated sites per draw
        shares = {name: (r * term).sum(dims) for name, term in terms.items()}
        entropy = log_w.squeeze(tuple(dims)) - (r * total).sum(dims)
        first = self.enumerated[0]
        shares[first] = shares[first] + entropy
        return shares

    def log_density(self, sites: dict) -> torch.Tensor:
        """The sum of ``sites``' log-densities per draw: ``[K]`` (a scalar without particles).
        ``log_density(model_sites) - log_density(guide_sites)`` is the joint log-weight of a
        draw, the one that global latents have. Not defined with enumerated sites (their sum
        is per datapoint): ``ValueError``."""
        if self.enumerated:
            raise ValueError(f"a joint log-density per draw is not defined with enumerated sites {list(self.enumerated)}; "
                             "draw them instead: importance_sample(..., enumerate=False)")
        total = 0.0
        for msg in sites.values():
            lp = self.log_prob(msg)
            if self.particle_dim is None:
                total = total + lp.sum()
                continue
            lp = lp.reshape((1,) * max(0, -self.particle_dim - lp.dim()) + lp.shape)
            keep = lp.dim() + self.particle_dim
            total = total + lp.sum([d for d in range(lp.dim()) if d != keep]).expand(self.num_particles)
        return torch.as_tensor(total)

    def _per_datapoint(self, name, msg) -> torch.Tensor:
        if self.particle_dim is None:
            raise ValueError("per-datapoint weights need the draws in a plate (num_particles)")
        if not in_data_plate(msg):
            raise ValueError(
                f"site {name!r} is outside the data plate (no plate at dim -1: a global latent): per-datapoint "
                "importance weights are not defined; ppgen.diagnostics.importance_diagnostics weighs the local part "
                "of each datapoint given draws of the globals")
        lp = self.log_prob(msg)
        lp = lp.reshape((1,) * max(0, -self.particle_dim - lp.dim()) + lp.shape)
        particle = lp.dim() + self.particle_dim
        # other plates; dims left of the draws too, unless they enumerate a site (kept to be summed out exactly)
        summed = [d for d in range(particle if self.enumerated else 0, lp.dim() - 1) if d != particle]
        if summed:
            lp = lp.sum(summed)
        return lp.expand(*lp.shape[:-2], self.num_particles, -1)


def in_data_plate(msg) -> bool:
    """Whether a site is inside the data plate (the plate at dim -1): local, not global."""
    return any(f.vectorized and f.dim == -1 and f.name != PARTICLES for f in msg["cond_indep_stack"])


def importance_sample(model, guide, *args, num_particles: int | None = 1, particle_dim: int = -2,
                      detach_guide: bool = False, enumerate: bool = True) -> ImportanceSample:
    """Draw ``num_particles`` z ~ q(z | args) from ``guide`` (vectorized in a plate at
    ``particle_dim``, which must be left of every plate of the model and guide; None: one
    draw, no plate) and replay ``model`` on them. Runs under whatever gradient and validation
    settings the caller has; ``detach_guide`` cuts the draws from the guide's graph. A pair
    that does not broadcast over the draws is run once per draw and its sites stacked to look
    the same (:func:`~ppgen.infer.draws.draw_sites`, with a warning once per pair).

    With ``enumerate`` (and a plate of draws) the guide's sites marked for parallel
    enumeration take all their values, in dims left of ``particle_dim`` (as Pyro's
    ``TraceEnum_ELBO`` places them), and the weights sum them out; ``enumerate=False`` samples
    them like any other site (for callers that want draws of y, not weights)."""

    # Pyro's enumeration handler costs a little on every site: a guide seen to mark no site
    # for enumeration is run without it from then on
    enumerate = enumerate and not _MARKS_NO_ENUMERATION.holds((guide,))

    def run(particles):
        if particles is not None and enumerate:
            particles = _enumerated(particles, particle_dim - 1)
        return run_pair(model, guide, args, particles, detach_guide)

    model_sites, guide_sites = draw_sites(run, (model, guide), num_particles, particle_dim)
    if enumerate and not any(msg["infer"].get("enumerate") for _, msg in guide_sites):
        _MARKS_NO_ENUMERATION.add((guide,))
    return ImportanceSample(dict(model_sites), dict(guide_sites), num_particles,
                            None if num_particles is None else particle_dim)


#: guides seen to mark no site for enumeration (held by weak reference)
_MARKS_NO_ENUMERATION = ProgramSet()


def _enumerated(particles, first_enum_dim: int):
    """Wrap a program in the plate of draws and, outside it, Pyro's enumeration (as
    ``TraceEnum_ELBO`` does): enumerated values get dims from ``first_enum_dim`` leftwards."""
    def wrap(fn):
        return poutine.enum(particles(fn), first_available_dim=first_enum_dim)
    return wrap


def log_importance_weights(model, guide, *args, num_particles: int = 1, detach_guide: bool = False) -> torch.Tensor:
    """log w[k, n] = log p(x_n, z_kn) - log q(z_kn | x_n) for K vectorized draws z_k ~ q:
    ``[K, N]``, N the size of the data plate (the plate at dim -1). Raises ``ValueError``
    for a latent outside the data plate (a global latent)."""
    with pyro.validation_enabled(False):
        sample = importance_sample(model, guide, *args, num_particles=num_particles, detach_guide=detach_guide)
        with outside_autocast():  # networks may have run in bf16 (training); densities are scored in float32
            return sample.log_weights()


def guide_draws(guide, *args, num_particles: int | None = 1, particle_dim: int = -2) -> dict:
    """The guide's sites for ``num_particles`` vectorized draws (the proposal half of
    :func:`importance_sample`): ``{name: msg}``; each latent's ``value`` is ``[K, N, ...]``."""
    (sites,) = draw_sites(lambda particles: (sample_sites(run_guide(guide, args, particles)),), (guide,),
                          num_particles, particle_dim)
    return dict(sites)


__all__ = ["PARTICLES", "ImportanceSample", "in_data_plate", "importance_sample", "log_importance_weights", "guide_draws"]
