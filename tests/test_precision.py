"""--precision bf16: networks under autocast, densities and the ELBO in float32
(ppgen/infer/precision.py); CUDA runs of every family, skipped without a GPU."""
from __future__ import annotations

import json
import math

import pyro
import pytest
import torch
from pyro import poutine
from torch import nn
from torch.overrides import TorchFunctionMode

from ppgen import guides, models, priors
from ppgen.infer import fit
from ppgen.infer.fit import FitConfig
from ppgen.infer.objectives import TraceELBO
from ppgen.infer.precision import PRECISIONS, autocast, check_precision, outside_autocast
from ppgen.nn.device import full_precision

CPU = torch.device("cpu")


class LowPrecisionOps(TorchFunctionMode):
    """Records every torch call inside the block whose result is a bfloat16/float16 tensor."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor) and out.dtype in (torch.bfloat16, torch.float16):
            self.seen.append(getattr(func, "__name__", str(func)))
        return out


def _first_linear(module: nn.Module) -> nn.Module:
    return next(m for m in module.modules() if isinstance(m, (nn.Linear, nn.ConvTranspose2d)))


def _vae(guide_name, prior=None):
    model = models.VAE(6, 3, likelihood="categorical", hidden=16, prior=prior)
    return model, guides.GUIDES[guide_name].for_model(model, hidden=16), (torch.randint(0, 17, (5, 6)).float(),)


def _conv_vae():
    model = models.ConvVAE(64, 3, image_shape=(1, 8, 8), width=4, hidden=16)
    guide = guides.conv_guide(guides.DiagonalNormalGuide, model)
    return model, guide, (torch.randint(0, 2, (5, 64)).float(),)


def _vrnn(likelihood):
    model = models.VRNN(6, 3, 8, likelihood=likelihood)
    x = torch.randn(4, 5, 6) if likelihood == "normal" else torch.randint(0, 2, (4, 5, 6)).float()
    mask = torch.ones(4, 5, dtype=torch.bool)
    mask[0, 3:] = False
    return model, guides.GUIDES["vrnn_filtering"].for_model(model), (x, mask)


PAIRS = {
    "vae/diag_normal": lambda: _vae("diag_normal"),
    "vae/lowrank_normal": lambda: _vae("lowrank_normal"),
    "vae/iaf": lambda: _vae("iaf"),
    "vae/mixture_prior": lambda: _vae("diag_normal", priors.MixtureOfGaussians(3, 4)),
    "sparse_vae/spike_and_slab": lambda: _vae("spike_and_slab", priors.SpikeAndSlab(3)),
    "conv_vae/diag_normal": _conv_vae,
    "vrnn/bernoulli": lambda: _vrnn("bernoulli"),
    "vrnn/autoregressive_bernoulli": lambda: _vrnn("autoregressive_bernoulli"),
    "vrnn/normal": lambda: _vrnn("normal"),
}


@pytest.mark.parametrize("name", PAIRS)
def test_bf16_step_runs_networks_in_bf16_and_scores_every_site_in_float32(name):
    """Inside a bf16 step the decoder's matmul runs in bfloat16 (seen by a forward hook), and
    every site's log-density is float32, computed with no bfloat16 arithmetic at all (every
    torch call is watched), as the objective scores them (outside autocast)."""
    model, guide, args = PAIRS[name]()
    decoder_dtypes = []
    _first_linear(model.decoder).register_forward_hook(lambda m, i, out: decoder_dtypes.append(out.dtype))
    with pyro.validation_enabled(False), autocast(CPU, "bf16"):
        guide_trace = poutine.trace(guide).get_trace(*args)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args)
        assert decoder_dtypes and set(decoder_dtypes) == {torch.bfloat16}
        with outside_autocast(), LowPrecisionOps() as ops:
            guide_trace.compute_log_prob()
            model_trace.compute_log_prob()
    assert ops.seen == [], f"bfloat16 arithmetic in the densities: {sorted(set(ops.seen))}"
    sites = [s for tr in (guide_trace, model_trace) for s in tr.nodes.values() if s["type"] == "sample"]
    assert len(sites) >= 2
    for site in sites:
        assert site["log_prob"].dtype == torch.float32, site["name"]
        assert torch.isfinite(site["log_prob"]).all(), site["name"]


def test_the_objective_scores_densities_outside_autocast(monkeypatch):
    """A density whose own arithmetic has a matmul (the low-rank guide's log q) would be
    autocast to bfloat16 (0.03 nats off here); the objective scores every site with autocast off."""
    seen = []
    score = TraceELBO._loss

    def watched(model_sites, guide_sites):
        seen.append(torch.is_autocast_enabled("cpu"))
        return score(model_sites, guide_sites)

    monkeypatch.setattr(TraceELBO, "_loss", staticmethod(watched))
    model, guide, args = _vae("lowrank_normal")
    with pyro.validation_enabled(False), autocast(CPU, "bf16"):
        loss = TraceELBO()(model, guide, *args)
    assert seen == [False] and loss.dtype == torch.float32 and torch.isfinite(loss)


def test_bf16_trains_a_vae_with_finite_falling_loss(digits):
    """fit with precision="bf16" on CPU: finite per-step losses, a train ELBO that rises over
    epochs, and a validation ELBO (scored in float32) near the fp32 run's."""
    runs = {}
    for precision in ("bf16", "fp32"):
        pyro.set_rng_seed(0)
        model = models.VAE.for_data(digits, z_dim=4, hidden=32)
        guide = guides.DiagonalNormalGuide.for_model(model, hidden=32)
        runs[precision] = fit(model, guide, digits.train[:400], digits.val[:200], epochs=6, batch_size=50, lr=3e-3,
                              device="cpu", progress=False, precision=precision)
    bf16, fp32 = runs["bf16"], runs["fp32"]
    assert all(math.isfinite(v) for v in bf16.step_loss)
    assert bf16.train_elbo[-1] > bf16.train_elbo[0] + 5.0  # nats per image
    assert abs(bf16.val_elbo[-1] - fp32.val_elbo[-1]) < 0.05 * abs(fp32.val_elbo[-1])


def test_fp32_is_bit_identical_to_no_autocast():
    """precision="fp32" adds no op: the same loss and gradients, bit for bit, as plain torch
    without any precision context; full_precision returns float32 and float64 tensors themselves."""
    results = []
    for wrapped in (False, True):
        pyro.set_rng_seed(0)
        model, guide, args = _vae("iaf")
        pyro.set_rng_seed(1)
        with pyro.validation_enabled(False):
            if wrapped:
                with autocast(CPU, "fp32"):
                    loss = TraceELBO()(model, guide, *args)
                with outside_autocast():
                    loss.backward()
            else:
                loss = TraceELBO()(model, guide, *args)
                loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in [*model.parameters(), *guide.parameters()]]))
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert torch.equal(loss_a, loss_b)
    assert all(torch.equal(a, b) for a, b in zip(grads_a, grads_b))
    for t in (torch.ones(2), torch.ones(2, dtype=torch.float64), torch.ones(2, dtype=torch.long)):
        assert full_precision(t) is t
    assert full_precision(torch.ones(2, dtype=torch.bfloat16)).dtype == torch.float32


def test_bf16_trains_the_gan_and_a_cli_run_on_cpu(tmp_path):
    """The companions take the setting too: a GAN epoch in bf16 (D's logits float32, finite
    losses), and ``ppgen train ... --precision bf16`` records it in the run's config."""
    from ppgen.cli import main
    from ppgen.companions.gan import train_gan

    images = (torch.rand(64, 16 * 16) < 0.3).float()
    history = train_gan(images, (1, 16, 16), z_dim=4, width=4, epochs=1, batch_size=32, device="cpu",
                        progress=False, precision="bf16")["history"]
    assert all(math.isfinite(history[k][0]) for k in ("d_loss", "g_loss", "d_real", "d_fake"))
    out = tmp_path / "run"
    main(["train", "vae", "--data", "digits", "--epochs", "1", "--hidden", "16", "--z-dim", "2", "--iwae-k", "2",
          "--precision", "bf16", "--out", str(out), "--quiet"])
    config = json.loads((out / "config.json").read_text())
    assert config["precision"] == "bf16"
    assert math.isfinite(json.loads((out / "metrics.json").read_text())["test_elbo_nats"])


def test_fit_with_fp32_equals_fit_without_the_setting(digits):
    histories = []
    for settings in ({}, {"precision": "fp32"}):
        pyro.set_rng_seed(0)
        model = models.VAE.for_data(digits, z_dim=2, hidden=16)
        guide = guides.DiagonalNormalGuide.for_model(model, hidden=16)
        histories.append(fit(model, guide, digits.train[:100], epochs=2, batch_size=50, device="cpu",
                             progress=False, **settings).step_loss)
    assert histories[0] == histories[1]


def test_an_unknown_precision_is_refused_by_name():
    for call in (lambda: check_precision("fp16"), lambda: autocast(CPU, "half"), lambda: FitConfig(precision="bf32").check()):
        with pytest.raises(ValueError, match=r"unknown precision '\w+'; choose one of: fp32, bf16"):
            call()
    assert list(PRECISIONS) == ["fp32", "bf16"]


def test_a_device_that_cannot_run_bf16_is_refused():
    with pytest.raises(ValueError, match="needs a CPU or CUDA device"):
        check_precision("bf16", "meta")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            autocast("cuda", "bf16")
    check_precision("fp32", "meta")  # fp32 runs anywhere


# -- CUDA: run on a GPU machine (pytest -m cuda); skipped, never faked, without one --------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

#: one small epoch of every family
FAMILY_RUNS = {
    "vae": {"data": "digits", "hidden": 32, "z_dim": 4},
    "sparse_vae": {"data": "digits", "hidden": 32, "z_dim": 4},
    "conv_vae": {"data": "digits", "hidden": 32, "z_dim": 4, "width": 4},
    "vrnn": {"data": "synthetic", "hidden": 16, "z_dim": 2},
    "gan": {"data": "sprites:32", "z_dim": 8, "width": 4},
    "vaegan": {"data": "sprites:32", "hidden": 32, "z_dim": 4, "width": 4},
    "deconv": {"data": "sprites:32", "width": 8},
}


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("model", FAMILY_RUNS)
def test_every_family_trains_one_epoch_on_cuda(model, precision, tmp_path):
    from ppgen.runs import train_run

    config = {"model": model, **FAMILY_RUNS[model], "epochs": 1, "batch_size": 64, "seed": 0,
              "precision": precision}
    metrics = train_run(config, tmp_path / model, device="cuda", progress=False, iwae_k=4)
    assert metrics["device"].startswith("cuda")
    assert (tmp_path / model / "checkpoint.pt").exists()


@pytest.mark.cuda
@cuda
def test_bf16_on_cuda_runs_the_decoder_in_bf16_and_trains(digits):
    model = models.VAE.for_data(digits, z_dim=4, hidden=64)
    guide = guides.DiagonalNormalGuide.for_model(model, hidden=64)
    dtypes = []
    _first_linear(model.decoder).register_forward_hook(lambda m, i, out: dtypes.append(out.dtype))
    history = fit(model, guide, digits.train, digits.val, epochs=4, batch_size=100, lr=3e-3, device="cuda",
                  progress=False, precision="bf16")
    assert torch.bfloat16 in dtypes  # training steps (validation runs in float32)
    assert all(math.isfinite(v) for v in history.step_loss)
    assert history.train_elbo[-1] > history.train_elbo[0]
    assert history.device.startswith("cuda")
