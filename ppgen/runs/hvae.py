"""The hierarchical VAE as a run (``ppgen train hvae``): build from a config, evaluate, draw figures.

Trained by :func:`ppgen.infer.fit` like the MLP VAE, on the same data; its evaluation reports,
besides the VAE's numbers, the KL and active units of every layer (``kl_nats_z1``,
``active_units_z2``, ...), found by :func:`ppgen.evaluate.evaluate` from the guide's sites."""
from __future__ import annotations

from .. import data as data_mod
from ..guides import GUIDES, LadderGuide
from ..models import HierarchicalVAE
from ..priors import PRIORS
from .pair import pair_family
from .vae import FIT_DEFAULTS, _pick, metrics, sample, save_figures

DEFAULTS = {"prior": None, "guide": None, "z_dims": [32, 16], "hidden": 256, "likelihood": None}
#: fit settings measured on digits (benchmarks/digits_vae.py --model hvae, BENCHMARKS.md "Trust table"):
#: the VAE's weight decay of 0.03 collapsed both layers (KL 0.05 and 0.04 nats, -ELBO 106.5); 0.01 with
#: 50 epochs of KL annealing was the best of the twelve settings tried (97.3); a CLI flag overrides them
HVAE_FIT_DEFAULTS = {**FIT_DEFAULTS, "weight_decay": 0.01, "anneal_epochs": 50}
#: the guides that share a hierarchy's top-down pass
LADDER = tuple(name for name, cls in GUIDES.items() if issubclass(cls, LadderGuide))


def build(config: dict, dataset):
    """(model, guide) from a run config: ``z_dims`` (layer sizes, bottom to top), ``hidden``,
    ``prior`` (p(z_L) of the top layer), ``guide`` (the ladder guide), ``likelihood``."""
    cfg = {**DEFAULTS, **{k: v for k, v in config.items() if v is not None}}
    kwargs = {"hidden": cfg["hidden"]}
    if cfg["prior"] is not None:
        kwargs["prior"] = _pick(PRIORS, cfg["prior"], "prior")(cfg["z_dims"][-1])
    if cfg["likelihood"] is not None:
        kwargs["likelihood"] = cfg["likelihood"]
    model = HierarchicalVAE.for_data(dataset, cfg["z_dims"], **kwargs)
    guide = _pick(GUIDES, cfg["guide"] or "ladder", "guide").for_model(model, hidden=cfg["hidden"])
    model.prior.use_guide(guide, dataset.train)  # a VampPrior on the top layer encodes with q(z_L | x)
    return model, guide


HVAE = pair_family("hvae", defaults=DEFAULTS, fit_defaults=HVAE_FIT_DEFAULTS, load_data=data_mod.load_vectors, build=build,
                   metrics=metrics, figures=save_figures, sample=sample, priors=PRIORS, guides=LADDER)
