"""ppgen: deep generative models as swappable Pyro model/guide pairs.

    import ppgen
    from ppgen import data, priors, fit, evaluate
    from ppgen.models import VAE
    from ppgen.guides import IAFGuide

    digits = data.load("digits")
    vae = VAE.for_data(digits, z_dim=16)
    vae.prior = priors.Laplace(16)              # swap the prior in one line
    guide = IAFGuide.for_model(vae)             # any guide with the model's latent sites
    history = fit(vae, guide, digits, epochs=50)
    print(evaluate(vae, guide, digits.test, k=1000))
    ppgen.report(vae, guide, digits.test, out="report.html")   # diagnostics, shown inline in a notebook

Any Pyro model/guide pair (functions, modules, autoguides) goes through the same calls;
``ppgen.report`` is a function (``report(run_dir)`` or ``report(model, guide, data, out=...)``).
"""
from __future__ import annotations

import importlib

from . import data, guides, likelihoods, models, priors
from .evaluate import evaluate
from .infer import fit

__version__ = "0.1.0"

_LAZY = {"to_inference_data": ("ppgen.diagnostics", "to_inference_data"), "report": ("ppgen.runs.report", "report"),
         "compare": ("ppgen.diagnostics.compare", "compare")}


def __getattr__(name):
    # the ArviZ/report stack is heavy to import; load it only when asked for
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'ppgen' has no attribute {name!r}")


__all__ = ["data", "guides", "likelihoods", "models", "priors", "fit", "evaluate", "report", "compare",
           "to_inference_data"]
