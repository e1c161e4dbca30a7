"""The conv VAE (and the VAE-GAN's model/guide pair) as a run: build from a config, evaluate.

Trained by :func:`ppgen.infer.fit` like the MLP VAE; the dataset, figures and samples are
the VAE family's (:mod:`ppgen.runs.vae`)."""
from __future__ import annotations

from .. import data as data_mod
from ..companions.sample_quality import code_mig
from ..evaluate import evaluate
from ..guides import GUIDES
from ..guides.amortized import conv_guide
from ..models import MODELS
from ..priors import PRIORS
from .pair import pair_family
from .vae import AMORTIZED, _pick, sample, save_figures, sparse_default_guide

DEFAULTS = {"prior": None, "guide": None, "z_dim": 16, "hidden": 256, "width": 32, "likelihood": None}


def build(config: dict, dataset):
    """(model, guide) from a run config: ``model`` (conv_vae or vaegan), ``prior``, ``guide``
    (any amortized guide; it gets a conv encoder), ``z_dim``, ``hidden`` (the encoder's dense
    layer), ``width`` (conv channels at full resolution), ``likelihood``; for the VAE-GAN
    also ``spectral_norm`` (of the discriminator). The default guide is the spike-and-slab
    one under the spike-and-slab prior, the diagonal Normal otherwise."""
    cfg = {**DEFAULTS, **{k: v for k, v in config.items() if v is not None}}
    model_cls = _pick(MODELS, config["model"], "model")
    kwargs = {"hidden": cfg["hidden"], "width": cfg["width"]}
    if cfg["prior"] is not None:
        kwargs["prior"] = _pick(PRIORS, cfg["prior"], "prior")(cfg["z_dim"])
    if cfg["likelihood"] is not None:
        kwargs["likelihood"] = cfg["likelihood"]
    if cfg.get("spectral_norm"):
        kwargs["spectral_norm"] = True
    model = model_cls.for_data(dataset, cfg["z_dim"], **kwargs)
    guide_name = cfg["guide"] or sparse_default_guide(model)
    return model, conv_guide(_pick(GUIDES, guide_name, "guide"), model)


#: the priors a conv VAE takes: not those that encode flat pseudo-inputs with the guide (the
#: VampPrior), since a conv encoder reads images
FLAT_FREE_PRIORS = tuple(name for name, cls in PRIORS.items() if not cls.needs_guide)
#: importance draws of the evaluation that ends ``ppgen train``: with K = 1000 a 1-epoch sprites run
#: evaluated for 380 s after 17 s of training (2 shared cores); ``ppgen eval --iwae-k 1000`` for
#: the paper-grade number
TRAIN_IWAE_K = 200


def metrics(model, guide, dataset, k: int = 1000, progress: bool = False) -> dict:
    """Test ELBO, IWAE log p(x) and active units; code sparsity under a sparse prior; MIG of
    the posterior means against the ground-truth factors where the data have them (sprites).
    ``progress``: a bar for the importance draws."""
    out = evaluate(model, guide, dataset.test, k=k, sparsity=model.prior.sparse, progress=progress)
    mig = code_mig(guide, dataset)
    return {**out, **({"mig": mig} if mig is not None else {})}


CONV_VAE = pair_family("conv_vae", defaults=DEFAULTS, load_data=data_mod.load_vectors, build=build, metrics=metrics,
                       figures=save_figures, sample=sample, priors=FLAT_FREE_PRIORS, guides=AMORTIZED,
                       train_iwae_k=TRAIN_IWAE_K)
