"""Training objectives: the ELBO family, a per-datapoint importance-weighted bound, and the
KL weight (beta) applied to latent sites.

Every objective is a callable ``loss(model, guide, *args) -> scalar tensor``: the negative
bound summed over the batch, differentiable (surrogate terms included for
non-reparameterized sites). ``enumerates`` says whether it sums out the guide's sites marked
for enumeration (``config_enumerate``); the others would sample them by the high-variance
score-function estimator, so :func:`ppgen.fit` refuses such guides under them. Model and guide are run by :mod:`.record`; the IWAE bound's
weights are :func:`.importance.log_importance_weights`, the one importance-weight function.
"""
from __future__ import annotations

import math

import pyro
import torch
from pyro import poutine
from pyro.distributions.util import is_identically_zero, scale_and_mask
from pyro.infer.util import MultiFrameTensor, is_validation_enabled
from pyro.poutine.messenger import Messenger
from torch.distributions import kl_divergence

from ..guides.sites import plate_nesting
from .draws import draw_sites
from .importance import log_importance_weights
from .precision import outside_autocast
from .record import run_pair, site_log_prob


class ScaleLatents(Messenger):
    """Multiply the log-density of every *latent* sample site by ``beta`` (observed sites keep
    weight 1). Applied to both model and guide, it turns the ELBO into
    E_q[log p(x|z)] - beta KL(q(z|x) || p(z)): the beta-VAE objective and KL annealing."""

    def __init__(self, beta: float):
        super().__init__()
        self.beta = beta

    def _process_message(self, msg):
        if msg["type"] == "sample" and not msg["is_observed"] and self.beta != 1.0:
            msg["scale"] = msg["scale"] * self.beta


def with_beta(fn, beta: float):
    return fn if beta == 1.0 else ScaleLatents(beta)(fn)


class ScaleData(Messenger):
    """Multiply the log-density of every per-datapoint site by ``factor`` = N / B: sites in
    the plate named ``plate`` and sites named in ``sites`` (a guide's local sites, whatever
    its plates are called). What ``pyro.plate(..., subsample=...)`` does, for a model whose
    data plate sees one minibatch of B of the N rows: with global latents in the model, the
    ELBO of the scaled minibatch is an unbiased estimate of the full-data ELBO (each global
    KL counted once, the likelihood N/B times)."""

    def __init__(self, plate: str | None, sites, factor: float):
        super().__init__()
        self.plate, self.sites, self.factor = plate, frozenset(sites), factor

    def _process_message(self, msg):
        # runs after the plates inside the program (handlers apply innermost first), so the
        # data plate is already on the site's stack
        if msg["type"] == "sample" and (msg["name"] in self.sites
                                        or any(f.name == self.plate for f in msg["cond_indep_stack"])):
            msg["scale"] = msg["scale"] * self.factor


def with_data_scale(fn, plate: str | None, sites, factor: float):
    return fn if factor == 1.0 else ScaleData(plate, sites, factor)(fn)


def _is_guide_messenger(guide) -> bool:
    return isinstance(poutine.unwrap(guide), Messenger)


class TraceELBO:
    """-ELBO by the Monte Carlo estimator of Pyro's ``Trace_ELBO``, with ``num_particles``
    vectorized samples.

    During training (Pyro validation off, as in :func:`ppgen.infer.fit`) the model and guide
    are run under one small recording handler (:mod:`.record`) instead of Pyro's trace/replay machinery; the
    value and gradients are those of ``pyro.infer.Trace_ELBO`` on the same random draws
    (tests/test_objectives.py checks this): reparameterized sites enter pathwise,
    non-reparameterized ones through the score-function surrogate with the same plate-wise
    Rao-Blackwellization; plates, masks, scales and ``pyro.markov`` loops are honoured. With
    validation on (Pyro's default, so interactive use and tests) it calls Pyro's own
    ``Trace_ELBO``, which also checks that model and guide sites match and have valid shapes.
    """

    name = "trace"
    enumerates = False
    _pyro_elbo_class = pyro.infer.Trace_ELBO

    def __init__(self, num_particles: int = 1, *, max_plate_nesting: int = 1):
        self.num_particles = int(num_particles)
        self.max_plate_nesting = int(max_plate_nesting)  # the particle plate sits just left of these dims
        self.pyro_elbo = self._pyro_elbo_class(num_particles=self.num_particles,
                                               vectorize_particles=self.num_particles > 1,
                                               max_plate_nesting=self.max_plate_nesting)

    def __call__(self, model, guide, *args):
        if is_validation_enabled() or _is_guide_messenger(guide):
            try:
                return self.pyro_elbo.differentiable_loss(model, guide, *args)
            except Exception:  # noqa: BLE001 -- a pair that does not broadcast over the particles: drawn below
                if self.num_particles == 1 or _is_guide_messenger(guide):
                    raise
                with pyro.validation_enabled(False):
                    return self(model, guide, *args)
        if self.num_particles > 1:
            # as Pyro's vectorize_particles: one plate left of all others; a pair that does not
            # broadcast over it is run once per particle (draw_sites says so once)
            model_sites, guide_sites = draw_sites(lambda particles: run_pair(model, guide, args, particles),
                                                  (model, guide), self.num_particles, -self.max_plate_nesting - 1)
        else:
            model_sites, guide_sites = run_pair(model, guide, args)
        with outside_autocast():  # networks ran in bf16 above; densities are scored in float32
            return self._loss(model_sites, guide_sites) / self.num_particles

    @staticmethod
    def _loss(model_sites, guide_sites) -> torch.Tensor:
        """-ELBO of one (vectorized) draw, as Trace_ELBO._differentiable_loss_particle forms it."""
        model_lp = [site_log_prob(msg) for _, msg in model_sites]
        elbo = sum(lp.sum() for lp in model_lp)
        surrogate = elbo
        guide_lp, score_sites = {}, []
        for name, msg in guide_sites:
            log_q, score_function, entropy = _score_parts(msg)
            guide_lp[name] = log_q
            log_q_sum = log_q.sum()
            elbo = elbo - log_q_sum
            if not is_identically_zero(entropy):  # pathwise term (the whole log q when reparameterized)
                surrogate = surrogate - (log_q_sum if entropy is log_q else entropy.sum())
            if not is_identically_zero(score_function):
                score_sites.append((msg["cond_indep_stack"], score_function))
        if not score_sites:  # every guide site reparameterized: the surrogate is the ELBO itself
            return -surrogate
        # score-function terms, Rao-Blackwellized by plates as in Trace_ELBO's _compute_log_r
        log_r = MultiFrameTensor()
        for (name, msg), lp in zip(model_sites, model_lp):
            term = lp if msg["is_observed"] else lp - guide_lp[name]
            log_r.add((msg["cond_indep_stack"], term.detach()))
        for stack, score_function in score_sites:
            surrogate = surrogate + (log_r.sum_to(stack) * score_function).sum()
        # value: the ELBO; gradient: the surrogate's (Trace_ELBO returns the same pair)
        return -elbo.detach() - (surrogate - surrogate.detach())


class MeanFieldELBO(TraceELBO):
    """-ELBO by the estimator of ``TraceMeanField_ELBO``: the KL term in closed form where one
    exists (Normal guide vs Normal prior, spike-and-slab vs spike-and-slab), Monte Carlo
    otherwise (silently, as Pyro does). Same two paths as :class:`TraceELBO`."""

    name = "meanfield"
    _pyro_elbo_class = pyro.infer.TraceMeanField_ELBO

    @staticmethod
    def _loss(model_sites, guide_sites) -> torch.Tensor:
        guide_by_name = dict(guide_sites)
        elbo = 0.0
        for name, msg in model_sites:
            if msg["is_observed"]:
                elbo = elbo + site_log_prob(msg).sum()
                continue
            q = guide_by_name[name]
            try:
                kl = scale_and_mask(kl_divergence(q["fn"], msg["fn"]), q["scale"], q["mask"])
                elbo = elbo - (kl.sum() if torch.is_tensor(kl) else kl * q["fn"].batch_shape.numel())
            except NotImplementedError:
                elbo = elbo + site_log_prob(msg).sum() - _entropy_term(q).sum()
        model_names = {name for name, _ in model_sites}
        for name, q in guide_sites:  # auxiliary guide sites, absent from the model
            if name not in model_names:
                elbo = elbo - _entropy_term(q).sum()
        return -elbo


def _score_parts(msg):
    """(log q, score-function term, entropy term) of a guide site, scaled and masked as
    ``Trace.compute_score_parts`` does (the score-function term is not scaled). For a
    reparameterized site the entropy term *is* log q: it is scaled once and shared."""
    parts = msg["fn"].score_parts(msg["value"], *msg["args"], **msg["kwargs"])
    log_q = scale_and_mask(parts.log_prob, msg["scale"], msg["mask"])
    entropy = parts.entropy_term
    entropy = log_q if entropy is parts.log_prob else scale_and_mask(entropy, msg["scale"], msg["mask"])
    return log_q, parts.score_function, entropy


def _entropy_term(msg) -> torch.Tensor:
    return _score_parts(msg)[2]


class IWAE:
    """-IWAE bound (Burda et al., 2016) per datapoint: -sum_n log (1/K) sum_k w_nk with
    w_nk = p(x_n, z_nk) / q(z_nk | x_n), K particles drawn jointly. Needs every latent site
    inside the data plate (true for amortized VAE/VRNN guides)."""

    name = "iwae"
    enumerates = False

    def __init__(self, num_particles: int = 5):
        self.num_particles = num_particles

    def __call__(self, model, guide, *args):
        log_w = log_importance_weights(model, guide, *args, num_particles=self.num_particles)
        return -(torch.logsumexp(log_w, 0) - math.log(self.num_particles)).sum()


class EnumELBO:
    """-ELBO with the guide's discrete sites marked for enumeration (``config_enumerate``)
    summed out exactly, by Pyro's ``TraceEnum_ELBO``: for y ~ q(y | x) enumerated and
    z ~ q(z | x, y), sum_y q(y | x) E_q(z|x,y)[log p(x, y, z) - log q(y | x) - log q(z | x, y)],
    whose gradient in q(y | x) is exact (no score-function term). ``max_plate_nesting`` is
    found from a trace of the pair on the first batch (:func:`ppgen.guides.sites.plate_nesting`);
    the enumeration dims go left of the plates (and of the ``num_particles`` draws)."""

    name = "enum"
    enumerates = True

    def __init__(self, num_particles: int = 1, *, max_plate_nesting: int | None = None):
        self.num_particles = int(num_particles)
        self.max_plate_nesting = max_plate_nesting
        self.pyro_elbo = None if max_plate_nesting is None else self._make(max_plate_nesting)

    def _make(self, nesting: int):
        return pyro.infer.TraceEnum_ELBO(max_plate_nesting=nesting, num_particles=self.num_particles,
                                         vectorize_particles=self.num_particles > 1)

    def __call__(self, model, guide, *args):
        if self.pyro_elbo is None:
            cuda = sorted({a.device.index or 0 for a in args if torch.is_tensor(a) and a.is_cuda})
            with torch.random.fork_rng(devices=cuda):  # the discovery run leaves the draws as they were
                self.max_plate_nesting = plate_nesting(model, guide, *args)
            self.pyro_elbo = self._make(self.max_plate_nesting)
        with outside_autocast():  # the sum over enumerated values is taken in float32, networks included
            if not torch.is_grad_enabled():  # evaluation: Pyro's differentiable_loss refuses a graph-free value
                return torch.as_tensor(self.pyro_elbo.loss(model, guide, *args))
            return self.pyro_elbo.differentiable_loss(model, guide, *args)


ELBOS = {"trace": TraceELBO, "meanfield": MeanFieldELBO, "iwae": IWAE, "enum": EnumELBO}
