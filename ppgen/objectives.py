"""Training objectives: the ELBO family, a per-datapoint importance-weighted bound, and the
KL weight (beta) applied to latent sites.

Every objective is a callable ``loss(model, guide, *args) -> scalar tensor``: the negative
bound summed over the batch, differentiable (surrogate terms included for
non-reparameterized sites).
"""
from __future__ import annotations

import math

import pyro
import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import prune_subsample_sites


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


class TraceELBO:
    """-ELBO by Pyro's ``Trace_ELBO`` (``num_particles`` vectorized samples)."""

    name = "trace"

    def __init__(self, num_particles: int = 1):
        self.elbo = pyro.infer.Trace_ELBO(num_particles=num_particles, vectorize_particles=num_particles > 1,
                                          max_plate_nesting=1)

    def __call__(self, model, guide, *args):
        return self.elbo.differentiable_loss(model, guide, *args)


class MeanFieldELBO(TraceELBO):
    """-ELBO by ``TraceMeanField_ELBO``: the KL term in closed form where one exists (Normal
    guide vs Normal prior, spike-and-slab vs spike-and-slab), Monte Carlo otherwise."""

    name = "meanfield"

    def __init__(self, num_particles: int = 1):
        self.elbo = pyro.infer.TraceMeanField_ELBO(num_particles=num_particles,
                                                   vectorize_particles=num_particles > 1, max_plate_nesting=1)


class IWAE:
    """-IWAE bound (Burda et al., 2016) per datapoint: -sum_n log (1/K) sum_k w_nk with
    w_nk = p(x_n, z_nk) / q(z_nk | x_n), K particles drawn jointly. Needs every latent site
    inside the data plate (true for amortized VAE/VRNN guides)."""

    name = "iwae"

    def __init__(self, num_particles: int = 5):
        self.num_particles = num_particles

    def __call__(self, model, guide, *args):
        log_w = log_importance_weights(model, guide, *args, num_particles=self.num_particles)
        return -(torch.logsumexp(log_w, 0) - math.log(self.num_particles)).sum()


ELBOS = {"trace": TraceELBO, "meanfield": MeanFieldELBO, "iwae": IWAE}


def log_importance_weights(model, guide, *args, num_particles: int = 1, data_plate: str = "data",
                           detach_guide: bool = False) -> torch.Tensor:
    """log w[k, n] = log p(x_n, z_kn) - log q(z_kn | x_n) for K vectorized draws z_k ~ q.

    Returns a ``[K, N]`` tensor: each site's log-density is summed over everything but the
    particle dimension and the ``data_plate`` dimension (masks and scales applied, so padded
    sequence steps contribute nothing). A latent site outside the data plate (a global
    latent) has no per-datapoint weight, and raises ``ValueError``.
    """
    particle_dim = -2  # the data plate sits at dim -1 in every ppgen model
    plate = pyro.plate("_particles", num_particles, dim=particle_dim)
    with pyro.validation_enabled(False):
        guide_trace = poutine.trace(plate(guide)).get_trace(*args)
        if detach_guide:
            guide_trace.detach_()
        model_trace = poutine.trace(poutine.replay(plate(model), trace=guide_trace)).get_trace(*args)
    total = 0.0
    for trace, sign in ((model_trace, 1.0), (guide_trace, -1.0)):
        trace = prune_subsample_sites(trace)
        trace.compute_log_prob()
        for name, site in trace.nodes.items():
            if site["type"] != "sample":
                continue
            total = total + sign * _per_datapoint(site, name, num_particles, data_plate)
    return total


def _per_datapoint(site, name, num_particles, data_plate):
    dims = {f.name: f.dim for f in site["cond_indep_stack"]}
    if data_plate not in dims:
        raise ValueError(
            f"site {name!r} is outside the {data_plate!r} plate (a global latent): per-datapoint "
            "importance weights are not defined; use ppgen.diagnostics for models with global latents"
        )
    if dims[data_plate] != -1:
        raise ValueError(f"the {data_plate!r} plate must be the innermost plate (dim=-1), got dim={dims[data_plate]}")
    lp = site["log_prob"]
    lp = lp.reshape((1,) * max(0, 2 - lp.dim()) + lp.shape)
    if lp.dim() > 2:  # nested plates left of the particle dim are summed out
        lp = lp.sum(list(range(lp.dim() - 2)))
    return lp.expand(num_particles, -1)
