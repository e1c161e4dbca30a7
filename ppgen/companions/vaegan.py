"""VAE-GAN: the conv VAE's Pyro model/guide pair trained together with a discriminator.

Two ways to bring the discriminator D into VAE training, both in :func:`vae_loss` (the one
place where the Pyro ELBO and the adversarial loss meet):

* an added adversarial term, ``adversarial_weight * -log D(x~)`` on decoded means x~ of
  reconstructions (z ~ q(z|x)) and of prior draws (z ~ p(z)): it pushes the means of p(x|z)
  towards images D cannot tell from data, i.e. against the blur of averaging over pixels;
* Larsen et al. (2016)'s learned similarity, ``feature_weight * 1/2 ||D_l(x) - D_l(x~)||^2``
  with D_l the discriminator's penultimate features: a reconstruction error measured in
  D's feature space instead of pixel space.

Larsen et al. drop the pixel likelihood; here the pixel ELBO of the Pyro model always stays
in the loss, so the trained pair is still a proper p(x, z) with q(z|x), and its test ELBO
and importance-sampled log p(x) are comparable with the plain VAE's: the price of the
adversarial terms is measured in the same nats.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..guides.amortized import AmortizedGuide
from ..guides.sites import check_sites
from ..infer import distributed
from ..infer.fit import make_optimizer, shared_elbo_per_datapoint
from ..infer.loop import Step, apply_update, train
from ..infer.precision import check_precision
from ..infer.objectives import ELBOS, with_beta
from ..models.vaegan import VAEGAN
from .gan import discriminator_loss, generator_loss, r1_penalty


@dataclass
class VAEGANConfig:
    """What shapes a run; saved in the checkpoint and compared on resume."""

    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    d_lr: float = 2e-4
    betas: tuple = (0.5, 0.999)
    elbo: str = "trace"
    num_particles: int = 1
    beta: float = 1.0
    # -ELBO sums over pixels (tens to hundreds of nats per image) while -log D is about one
    # nat: the adversarial term needs a weight of this order to matter (BENCHMARKS.md)
    adversarial_weight: float = 10.0
    feature_weight: float = 0.0
    gradient_penalty: float = 0.0
    seed: int = 0
    precision: str = "fp32"

    def __post_init__(self):
        self.betas = tuple(float(b) for b in self.betas)

    def check(self) -> None:
        check_precision(self.precision)
        if self.elbo not in ELBOS:
            raise ValueError(f"unknown elbo {self.elbo!r}; choose one of: {', '.join(ELBOS)}")
        if self.epochs < 1 or self.batch_size < 1 or self.num_particles < 1:
            raise ValueError("epochs, batch_size and num_particles must be >= 1")
        if self.lr <= 0 or self.d_lr <= 0:
            raise ValueError("lr and d_lr must be > 0")
        if min(self.beta, self.adversarial_weight, self.feature_weight, self.gradient_penalty) < 0:
            raise ValueError("beta, adversarial_weight, feature_weight and gradient_penalty must be >= 0")


def decode_fakes(model: VAEGAN, guide, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(z_q, fakes)``: codes z_q ~ q(z|x) (reparameterized) and the unit-scale means of
    p(x|z) for ``[z_q detached, z_p ~ p(z)]``, the images D must tell from data (reconstructions
    and prior samples both count as fakes, as in Larsen et al.). Decoded once per step and
    used by both updates, as :func:`ppgen.companions.gan.gan_step` does with its generator's batch."""
    z_q = guide.posterior(x).rsample()
    z_p = model.prior().sample((x.shape[0],))
    return z_q, model.images(torch.cat([z_q.detach(), z_p]))


def discriminator_loss_on(model: VAEGAN, x: torch.Tensor, fakes: torch.Tensor,
                          cfg: VAEGANConfig) -> tuple[torch.Tensor, dict]:
    """D's cross-entropy, data against ``fakes`` (detached: this loss trains D only), plus the
    optional R1 penalty on data. ``parts``: ``d_real``, ``d_fake`` (mean D probabilities) as
    detached 0-d tensors (read by :func:`vaegan_step` once, with the other terms)."""
    real = x / model.likelihood.input_scale
    real_logits, fake_logits = model.discriminator(real), model.discriminator(fakes.detach())
    loss = discriminator_loss(real_logits, fake_logits)
    if cfg.gradient_penalty:
        loss = loss + 0.5 * cfg.gradient_penalty * r1_penalty(model.discriminator, real)
    return loss, {"d_real": torch.sigmoid(real_logits).mean().detach(), "d_fake": torch.sigmoid(fake_logits).mean().detach()}


def vae_loss(model: VAEGAN, guide, x: torch.Tensor, z_q: torch.Tensor, fakes: torch.Tensor, objective,
             cfg: VAEGANConfig) -> tuple[torch.Tensor, dict]:
    """THE place where the Pyro ELBO meets the adversarial loss. Per datapoint::

        loss = -ELBO(x)                                        Pyro model + guide (ppgen.infer.objectives)
             + adversarial_weight * -log D(x~)                 x~ = fakes (z ~ q(z|x) and z ~ p(z))
             + feature_weight * 1/2 ||D_l(x) - D_l(x~_q)||^2   Larsen et al.'s learned similarity

    with x~ the means of p(x|z) on the unit scale and x~_q = mean of p(x|z_q).

    ``z_q`` and ``fakes`` come from :func:`decode_fakes`. Returns ``(loss, parts)`` with the
    terms as detached 0-d tensors (no host-device sync here; :func:`vaegan_step` reads them once). Gradients reach the decoder from all three terms and the guide from the
    ELBO and the feature term only: the fakes were decoded from detached codes, as in Larsen
    et al., so q(z|x) stays an inference network rather than being bent towards codes that
    decode to convincing images. D is not trained by this loss (its weights are frozen
    while it is minimised; :func:`discriminator_loss_on` trains it).
    """
    n = x.shape[0]
    elbo_loss = objective(with_beta(model, cfg.beta), with_beta(guide, cfg.beta), x) / n
    loss, parts = elbo_loss, {"neg_elbo": elbo_loss.detach()}
    if cfg.adversarial_weight:
        adversarial = generator_loss(model.discriminator(fakes))
        loss = loss + cfg.adversarial_weight * adversarial
        parts["adversarial"] = adversarial.detach()
    if cfg.feature_weight:
        real = x / model.likelihood.input_scale
        features = model.discriminator.features
        feature = 0.5 * (features(model.images(z_q)) - features(real)).pow(2).sum(-1).mean()
        loss = loss + cfg.feature_weight * feature
        parts["feature"] = feature.detach()
    return loss, parts


def vaegan_step(model: VAEGAN, guide, x: torch.Tensor, objective, opt_vae, opt_d, cfg: VAEGANConfig,
                apply=apply_update, *, run_d=distributed.unsynced, run_vae=distributed.unsynced) -> dict:
    """One training step: a discriminator update, then an update of p(x, z) and q(z|x) on
    :func:`vae_loss`; each loss goes to ``apply(loss, optimizer, what)`` (the loop's
    :func:`ppgen.infer.loop.apply_update`, which stops on a non-finite loss before the update).
    ``run_d(fn, *args)`` and ``run_vae(fn, *args)`` compute the two losses
    (:func:`ppgen.infer.distributed.synced` over D's and over the VAE's parameters under
    torchrun, so that DDP averages each update's gradients; plain calls in one process).
    Returns every term as a float (0.0 for a term with weight 0)."""
    z_q, fakes = decode_fakes(model, guide, x)
    d_loss, d_parts = run_d(discriminator_loss_on, model, x, fakes, cfg)
    d_value = apply(d_loss, opt_d, "discriminator loss")
    model.discriminator.requires_grad_(False)  # no weight gradients for D from the VAE's loss
    try:
        loss, parts = run_vae(vae_loss, model, guide, x, z_q, fakes, objective, cfg)
        apply(loss, opt_vae, "VAE-GAN loss")
    finally:
        model.discriminator.requires_grad_(True)
    terms = {**parts, **d_parts}
    values = torch.stack(list(terms.values())).tolist()  # one read for every logged term
    return {"adversarial": 0.0, "feature": 0.0, **dict(zip(terms, values)), "d_loss": d_value}


def train_vaegan(model: VAEGAN, guide, data: torch.Tensor, val_data: torch.Tensor | None = None, *,
                 device="auto", checkpoint: str | Path | None = None, resume: bool = False, progress: bool = True,
                 **settings) -> dict:
    """Train a :class:`VAEGAN` and its guide on flat data ``[N, x_dim]`` (in the likelihood's
    support, e.g. digits counts 0..16 or binary sprites); ``settings`` are the fields of
    :class:`VAEGANConfig`, whose defaults are the only ones.

    Each step (:func:`vaegan_step`): one discriminator update (Adam with ``d_lr`` and
    ``betas``), then one update of p(x, z) and q(z|x) on :func:`vae_loss` (Adam with ``lr``).
    Returns ``{"model", "guide", "history"}``; ``history`` holds per-epoch lists
    (``epoch``, ``neg_elbo``, ``adversarial``, ``feature``, ``d_loss``, ``d_real``,
    ``d_fake``, ``val_elbo`` in nats when ``val_data`` is given, ``seconds``).

    Trained by the one loop (:func:`ppgen.infer.loop.train`): device ``"auto"``, seeded, an
    atomic checkpoint each epoch, exact resume up to ``epochs`` in total, and a non-finite
    loss stops training before the update it would drive, leaving the last checkpoint (the
    last good state) intact.
    """
    if not isinstance(model, VAEGAN):
        raise TypeError(f"train_vaegan trains a VAEGAN, got {type(model).__name__}")
    if not isinstance(guide, AmortizedGuide):
        raise TypeError(f"the guide must be amortized (expose posterior(x)), got {type(guide).__name__}")
    cfg = VAEGANConfig(**settings)
    cfg.check()
    _check_data(model, data, "training data")
    if val_data is not None:
        _check_data(model, val_data, "validation data")

    def make_step(dev) -> Step:
        model.to(dev), guide.to(dev)
        check_sites(model, guide, data[:2].to(dev))  # also creates lazily built guide parameters
        opt_vae = make_optimizer(model.vae_parameters() + list(guide.parameters()), lr=cfg.lr)
        opt_d = torch.optim.Adam(model.discriminator.parameters(), lr=cfg.d_lr, betas=cfg.betas)
        objective = ELBOS[cfg.elbo](cfg.num_particles)
        val = (distributed.share(val_data.to(dev)),) if val_data is not None else None
        # under torchrun DDP averages the gradients of each update's parameters (D's; the VAE's and the guide's)
        run_d = distributed.synced(model.discriminator.parameters())
        run_vae = distributed.synced(model.vae_parameters() + list(guide.parameters()))

        def update(batch, t, apply) -> dict:
            return vaegan_step(model, guide, batch[0], objective, opt_vae, opt_d, cfg, apply, run_d=run_d,
                               run_vae=run_vae)

        return Step(update, {"model": model, "guide": guide, "opt_vae": opt_vae, "opt_d": opt_d},
                    score_name="val_elbo",
                    score=(lambda: shared_elbo_per_datapoint(model, guide, val, cfg.batch_size, None))
                    if val is not None else None)

    _, history = train(make_step, data, asdict(cfg), device=device, checkpoint=checkpoint, resume=resume,
                       progress=progress, desc="vaegan")
    model.eval(), guide.eval()
    return {"model": model, "guide": guide, "history": history}


def _check_data(model: VAEGAN, x, what: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what} must be a tensor [N, {model.x_dim}], got {type(x).__name__}")
    if x.dim() >= 1 and x.shape[0] == 0:
        raise ValueError(f"{what} is empty")
    try:
        model.check_data(x)
    except ValueError as e:
        raise ValueError(f"{what}: {e}") from None
