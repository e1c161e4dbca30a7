"""Check that a guide samples exactly the model's latent sites, before any training."""
from __future__ import annotations

import pyro
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites

from ..models.interfaces import ChecksModel, ChecksPrior


class SiteMismatchError(ValueError):
    pass


def latent_sites(fn, *args, **kwargs) -> list[str]:
    """Names of the latent sample sites of one run of ``fn(*args)``: not observed, not plate
    subsample sites, not a guide's auxiliary sites (an AutoGuide's unconstrained draws)."""
    with pyro.validation_enabled(False), poutine.block():
        trace = prune_subsample_sites(poutine.trace(fn).get_trace(*args, **kwargs))
    return [name for name, site in trace.nodes.items()
            if site["type"] == "sample" and not site["is_observed"] and not site["infer"].get("is_auxiliary")]


def check_sites(model, guide, *args, **kwargs) -> list[str]:
    """Trace ``model`` and ``guide`` on ``args`` (a small batch is enough) and raise
    :class:`SiteMismatchError` listing both site sets if they differ. Guides that need a
    particular prior say so through an optional ``check_model(model)`` method, and models
    that allow only some priors through ``check_prior()`` (:mod:`ppgen.models.interfaces`)."""
    if isinstance(model, ChecksPrior):
        model.check_prior()
    if isinstance(guide, ChecksModel):
        guide.check_model(model)
    guide_sites = latent_sites(guide, *args, **kwargs)
    model_sites = latent_sites(model, *args, **kwargs)
    if sorted(guide_sites) != sorted(model_sites):
        raise SiteMismatchError(
            f"guide {_name(guide)} samples sites {sorted(guide_sites)} but model {_name(model)} "
            f"has latent sites {sorted(model_sites)}; a guide must sample exactly the model's latent sites"
        )
    return model_sites


def _name(fn) -> str:
    return type(fn).__name__ if not hasattr(fn, "__name__") else fn.__name__
