"""Run a guide, then the model replayed on the guide's draws, and keep the sample sites of
both: what every objective (:mod:`.objectives`) and every importance weight
(:mod:`.importance`) is computed from.

A site is kept as Pyro's message itself (``name``, ``value``, ``fn``, ``is_observed``,
``infer``, ``scale``, ``mask``, ``cond_indep_stack``), read after the run, when every handler
has set it. This is all an ELBO needs from ``poutine.trace``/``poutine.replay``, at a fraction
of their Python cost.
"""
from __future__ import annotations

import torch
from pyro.distributions.util import scale_and_mask
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample


class Record(Messenger):
    """The sample sites of one run of a Pyro program, in order (a minimal ``poutine.trace``).

    With ``replay`` (another record's sites) it also does ``poutine.replay``: latent sites
    named there take that value.
    """

    def __init__(self, replay: dict | None = None):
        super().__init__()
        self.sites: dict = {}
        self.replay = replay

    def _pyro_sample(self, msg):
        if self.replay is None or msg["is_observed"]:
            return
        guide_msg = self.replay.get(msg["name"])
        if guide_msg is not None:
            if guide_msg["is_observed"]:
                raise RuntimeError(f"site {msg['name']} must be sampled in trace")
            msg["done"] = True
            msg["value"] = guide_msg["value"]
            msg["infer"] = guide_msg["infer"]

    def _pyro_post_sample(self, msg):
        if msg["infer"].get("_do_not_trace"):  # Pyro's trace skips these auxiliary sites too
            return
        name = msg["name"]
        if name in self.sites:
            raise RuntimeError(f"Multiple sample sites named '{name}'")
        self.sites[name] = msg


def sample_sites(record: Record) -> list:
    """(name, msg) of the sample sites that are not plate subsample sites."""
    return [(name, msg) for name, msg in record.sites.items() if not site_is_subsample(msg)]


def site_log_prob(msg) -> torch.Tensor:
    """A site's log-density, scaled and masked as ``Trace.compute_log_prob`` does."""
    lp = msg["fn"].log_prob(msg["value"], *msg["args"], **msg["kwargs"])
    return scale_and_mask(lp, msg["scale"], msg["mask"])


def run_guide(guide, args, particles=None) -> list:
    """The sample sites of one run of ``guide(*args)``; ``particles`` (a ``pyro.plate``) wraps
    it to vectorize draws."""
    record = Record()
    with record:
        (particles(guide) if particles is not None else guide)(*args)
    return record


def run_pair(model, guide, args, particles=None, detach_guide: bool = False):
    """Run the guide, then the model replayed against it (``get_importance_trace`` without
    the Trace objects); ``particles``, a ``pyro.plate``, wraps both to vectorize draws.
    Returns ``(model_sites, guide_sites)``, lists of ``(name, msg)``."""
    guide_record = run_guide(guide, args, particles)
    if detach_guide:
        for msg in guide_record.sites.values():
            msg["value"] = msg["value"].detach()
    model_record = Record(replay=guide_record.sites)
    with model_record:
        (particles(model) if particles is not None else model)(*args)
    return sample_sites(model_record), sample_sites(guide_record)
