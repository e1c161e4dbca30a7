"""The VAE family (vae, sparse_vae) as runs: build from a config, evaluate, draw figures."""
from __future__ import annotations

from pathlib import Path

import torch
from pyro import poutine

from .. import data as data_mod
from ..evaluate import evaluate
from ..figures.images import show_images
from ..distributions.spike_slab import check_spike_gradient
from ..guides import GUIDES, AmortizedGuide, SpikeAndSlabGuide
from .. import models
from ..models import MODELS
from ..priors import PRIORS
from .pair import FIT_SETTINGS, pair_family

DEFAULTS = {"prior": None, "guide": None, "z_dim": 16, "hidden": 256, "likelihood": None}
#: fit settings tuned on digits (benchmarks/digits_vae.py, BENCHMARKS.md); a CLI flag overrides them
FIT_DEFAULTS = {"epochs": 1000, "patience": 100, "weight_decay": 0.03}
#: the guides that take an encoder of x: every amortized one
AMORTIZED = tuple(name for name, cls in GUIDES.items() if issubclass(cls, AmortizedGuide))
SPARSE = tuple(name for name, cls in PRIORS.items() if cls.sparse)


def build(config: dict, dataset, default_guide=lambda model: "diag_normal"):
    """(model, guide) from a run config: registry names plus sizes; ``default_guide(model)``
    names the guide when the config does not."""
    cfg = {**DEFAULTS, **{k: v for k, v in config.items() if v is not None}}
    model_cls = _pick(MODELS, config["model"], "model")
    kwargs = {"hidden": cfg["hidden"]}
    if cfg["prior"] is not None:
        kwargs["prior"] = _pick(PRIORS, cfg["prior"], "prior")(cfg["z_dim"])
    if cfg["likelihood"] is not None:
        kwargs["likelihood"] = cfg["likelihood"]
    model = model_cls.for_data(dataset, cfg["z_dim"], **kwargs)
    guide_name = cfg["guide"] or default_guide(model)
    guide = _pick(GUIDES, guide_name, "guide").for_model(model, hidden=cfg["hidden"])
    # a prior defined through the guide's encoder (the VampPrior) takes it now; others ignore it
    model.prior.use_guide(guide, dataset.train)
    return model, guide


def sparse_default_guide(model) -> str:
    """The spike-and-slab guide for the spike-and-slab prior (the pairing with finite KL from
    exact zeros); the diagonal Normal otherwise."""
    return "spike_and_slab" if model.prior.name == "spike_and_slab" else "diag_normal"


def metrics(model, guide, dataset, k: int = 1000, progress: bool = False) -> dict:
    """Test ELBO, IWAE log p(x) and active units; code sparsity under a sparse prior
    (``progress``: a bar for the importance draws)."""
    return evaluate(model, guide, dataset.test, k=k, sparsity=model.prior.sparse, progress=progress)


def decoder_of(model) -> dict:
    """``decode_mean`` (z -> mean of p(x | z)) and the latent ``code`` site it reads: ``z`` for the
    VAE family (VAE, sparse, conv, the VAE-GAN's model), ``z1`` for the hierarchical VAE (p(x | z_1));
    nothing for other models. What figures and the report decode."""
    if isinstance(model, models.VAE):  # the model class (this module's VAE is the family)
        return {"decode_mean": lambda z: model.likelihood.mean(model.decoder(z)), "code": "z"}
    if isinstance(model, models.HierarchicalVAE):
        return {"decode_mean": lambda z: model.likelihood.mean(model.decoder(z)), "code": model.sites[0]}
    return {}


@torch.no_grad()
def save_figures(model, guide, dataset, run_dir) -> Path:
    """run_dir/samples.png: test images, their reconstructions (mean of p(x|z), z ~ q(z|x), the
    code the decoder reads) and samples from the model."""
    path = Path(run_dir) / "samples.png"
    x = dataset.test[:32].to(next(model.parameters()).device)
    decoder = decoder_of(model)
    z = poutine.trace(guide).get_trace(x).nodes[decoder["code"]]["value"]
    panels = {"data": x, "reconstructions": decoder["decode_mean"](z), "samples": model.sample(32)}
    show_images(panels, dataset.image_shape or (1, 1, dataset.x_dim), path=path)
    return path


def sample(model, n: int, out_path, dataset, length=None) -> list[Path]:
    show_images({"samples": model.sample(n)}, dataset.image_shape or (1, 1, dataset.x_dim), path=out_path)
    return [Path(out_path)]


def _pick(registry: dict, name: str, what: str):
    if name not in registry:
        raise ValueError(f"unknown {what} {name!r}; choose one of: {', '.join(registry)}")
    return registry[name]


VAE = pair_family("vae", defaults=DEFAULTS, fit_defaults=FIT_DEFAULTS, load_data=data_mod.load_vectors, build=build,
                  metrics=metrics, figures=save_figures, sample=sample, priors=PRIORS, guides=AMORTIZED)
#: the sparse VAE's extra setting: the spike-and-slab guide's gradient w.r.t. its spike probabilities
#: (ppgen.distributions.spike_slab); None: "score" (unbiased) under elbo="trace", the only objective
#: that adds its score-function term (digits, 100 epochs: test -ELBO 99.5 nats vs 106.5 for straight-through),
#: "straight_through" under the others (under "meanfield", with the exact KL, it is nearly unbiased: 99.0)
SPARSE_DEFAULTS = {**DEFAULTS, "spike_gradient": None}


def sparse_build(config: dict, dataset):
    """:func:`build` with the spike-and-slab guide by default and its ``spike_gradient`` set; the
    estimator used is written back into ``config`` (as ``train_run`` records the prior and guide
    built), so config.json says which one trained the run."""
    model, guide = build(config, dataset, sparse_default_guide)
    chosen = config.get("spike_gradient")
    if not isinstance(guide, SpikeAndSlabGuide):
        if chosen is not None:
            raise ValueError(f"--spike-gradient is a setting of the spike_and_slab guide; the guide is "
                             f"{type(guide).__name__}")
        return model, guide
    elbo = config.get("elbo") or FIT_SETTINGS["elbo"]
    if chosen is None:
        chosen = "score" if elbo == "trace" else "straight_through"
    elif chosen == "score" and elbo != "trace":
        raise ValueError(f"spike_gradient 'score' needs elbo 'trace' (the objective that adds its score-function "
                         f"term); elbo {elbo!r} takes spike_gradient 'straight_through'")
    guide.spike_gradient = check_spike_gradient(chosen)
    if "spike_gradient" in config:
        config["spike_gradient"] = chosen
    return model, guide


SPARSE_VAE = pair_family("sparse_vae", defaults=SPARSE_DEFAULTS, fit_defaults=FIT_DEFAULTS,
                         load_data=data_mod.load_vectors, build=sparse_build,
                         metrics=metrics, figures=save_figures, sample=sample, priors=SPARSE, guides=AMORTIZED)
