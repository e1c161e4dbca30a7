import hashlib

import pytest
import torch

from ppgen.infer.checkpoint import load_checkpoint
from ppgen.guides import DiagonalNormalGuide, IAFGuide
from ppgen.infer import NonFiniteLossError, fit
from ppgen.models import VAE
from ppgen import priors


def small_pair(digits, guide_cls=DiagonalNormalGuide, prior=None):
    torch.manual_seed(123)
    model = VAE.for_data(digits, z_dim=4, hidden=32, prior=prior(4) if prior else None)
    return model, guide_cls.for_model(model, hidden=32)


def params(*modules):
    return [p.detach().clone() for m in modules for p in m.parameters()]


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


SETTINGS = dict(batch_size=100, lr=1e-3, seed=7, device="cpu", progress=False, anneal_epochs=2)


@pytest.mark.parametrize("guide_cls,prior", [(DiagonalNormalGuide, None), (IAFGuide, priors.MixtureOfGaussians)])
def test_resume_continues_exactly(tmp_path, digits, guide_cls, prior):
    x, v = digits.train[:300], digits.val[:100]
    m1, g1 = small_pair(digits, guide_cls, prior)
    h1 = fit(m1, g1, x, v, epochs=4, checkpoint=tmp_path / "a.pt", **SETTINGS)

    m2, g2 = small_pair(digits, guide_cls, prior)
    fit(m2, g2, x, v, epochs=2, checkpoint=tmp_path / "b.pt", **SETTINGS)
    m3, g3 = small_pair(digits, guide_cls, prior)  # a fresh process would start from new modules
    h3 = fit(m3, g3, x, v, epochs=4, checkpoint=tmp_path / "b.pt", resume=True, **SETTINGS)

    for a, b in zip(params(m1, g1), params(m3, g3)):
        assert torch.equal(a, b)
    assert h1.train_elbo == h3.train_elbo and h1.val_elbo == h3.val_elbo and h1.lr == h3.lr
    assert load_checkpoint(tmp_path / "b.pt")["epoch"] == 4


def test_seeded_runs_are_reproducible(digits):
    runs = []
    for _ in range(2):
        m, g = small_pair(digits)
        fit(m, g, digits.train[:200], epochs=2, **SETTINGS)
        runs.append(params(m, g))
    assert all(torch.equal(a, b) for a, b in zip(*runs))


def test_resume_cannot_stretch_a_schedule(tmp_path, digits):
    m, g = small_pair(digits)
    fit(m, g, digits.train[:200], epochs=1, checkpoint=tmp_path / "s.pt", lr_schedule="cosine", **SETTINGS)
    with pytest.raises(ValueError, match="'cosine' learning-rate schedule was laid out over epochs=1"):
        fit(m, g, digits.train[:200], epochs=2, checkpoint=tmp_path / "s.pt", resume=True, lr_schedule="cosine", **SETTINGS)


def test_resume_refuses_changed_settings(tmp_path, digits):
    m, g = small_pair(digits)
    fit(m, g, digits.train[:200], epochs=1, checkpoint=tmp_path / "c.pt", **SETTINGS)
    with pytest.raises(ValueError, match="lr was 0.001, now 0.01"):
        fit(m, g, digits.train[:200], epochs=2, checkpoint=tmp_path / "c.pt", resume=True,
            **{**SETTINGS, "lr": 1e-2})


def test_nan_parameter_stops_training_and_keeps_checkpoint(tmp_path, digits):
    m, g = small_pair(digits)
    ckpt = tmp_path / "good.pt"
    fit(m, g, digits.train[:200], epochs=2, checkpoint=ckpt, **SETTINGS)
    before = sha(ckpt)
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss.*epoch 3.*epoch 2\) is intact"):
        _continue_with_nan(m, g, digits, ckpt)
    assert sha(ckpt) == before
    state = load_checkpoint(ckpt)
    assert state["epoch"] == 2 and all(torch.isfinite(t).all() for t in state["model"].values())


def _continue_with_nan(model, guide, digits, ckpt):
    """Resume the run with a hook that writes a NaN into a weight whenever the model runs: the
    first step's loss is NaN and training must stop before touching the checkpoint."""

    def poison(module, args):
        with torch.no_grad():
            module.decoder[0].weight[0, 0] = float("nan")

    model.register_forward_pre_hook(poison)
    return fit(model, guide, digits.train[:200], epochs=4, checkpoint=ckpt, resume=True, **SETTINGS)


def test_nan_in_data_is_refused_before_training(tmp_path, digits):
    m, g = small_pair(digits)
    ckpt = tmp_path / "good.pt"
    fit(m, g, digits.train[:200], epochs=1, checkpoint=ckpt, **SETTINGS)
    before = sha(ckpt)
    bad = digits.train[:200].clone()
    bad[3, 5] = float("nan")
    with pytest.raises(ValueError, match="training data.*non-finite"):
        fit(m, g, bad, epochs=2, checkpoint=ckpt, resume=True, **SETTINGS)
    assert sha(ckpt) == before


def test_nan_reaching_the_loss_stops_training(tmp_path):
    # without the up-front data check a NaN reaches the loss, which stops training just the same
    torch.manual_seed(0)
    x = torch.randn(100, 5)
    m = VAE(5, 2, likelihood="normal", hidden=16)
    g = DiagonalNormalGuide.for_model(m, hidden=16)
    fit(m, g, x, epochs=1, checkpoint=tmp_path / "n.pt", **SETTINGS)
    before = sha(tmp_path / "n.pt")
    x[7, 1] = float("nan")
    with pytest.raises(NonFiniteLossError, match="epoch 2, step 1"):
        fit(m, g, x, epochs=2, checkpoint=tmp_path / "n.pt", resume=True, validate=False, **SETTINGS)
    assert sha(tmp_path / "n.pt") == before


def test_bad_inputs_to_fit(digits):
    m, g = small_pair(digits)
    with pytest.raises(ValueError, match=r"outside the support \{0, ..., 16\}"):
        fit(m, g, digits.train[:50] + 1, epochs=1, progress=False)
    with pytest.raises(ValueError, match="unknown elbo 'foo'"):
        fit(m, g, digits.train[:50], elbo="foo")
    with pytest.raises(ValueError, match="CUDA is not available") if not torch.cuda.is_available() else pytest.raises(ValueError, match="unknown device"):
        fit(m, g, digits.train[:50], device="cuda" if not torch.cuda.is_available() else "tpu")
    with pytest.raises(ValueError, match="resume=True needs a checkpoint"):
        fit(m, g, digits.train[:50], resume=True, progress=False)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        fit(m, g, digits.train[:50], resume=True, checkpoint="/nonexistent/x.pt", progress=False)


def test_annealing_schedule_and_early_stopping(digits, tmp_path):
    m, g = small_pair(digits)
    ckpt = tmp_path / "fit.pt"
    hist = fit(m, g, digits.train[:200], digits.val[:100], epochs=30, patience=0, lr=3e-2,
               batch_size=100, anneal_epochs=4, progress=False, device="cpu", checkpoint=ckpt)
    assert hist.beta[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert hist.stopped_early and len(hist.epoch) < 30
    saved = load_checkpoint(ckpt)
    assert saved["finished"] and saved["history"]["stopped_early"]   # the record says why training ended
    assert hist.best_val_elbo == max(hist.val_elbo)


def test_builtin_pairs_keep_their_parameters_checkpoint_and_objective(tmp_path, digits):
    """Built-in families train exactly as before user pairs were supported: the optimiser's
    parameters are the modules' own, in order; no param-store part in the checkpoint; their
    latents are all local, so minibatches keep the per-datapoint objective (no N/B scaling)."""
    from ppgen.infer.fit import DataScaling, pair_parameters

    m, g = small_pair(digits)
    x = digits.train[:200]
    params, store = pair_parameters(m, g, x[:2])
    assert [id(p) for p in params] == [id(p) for p in [*m.parameters(), *g.parameters()]] and not store
    assert not DataScaling.of(m, (x[:2],), 200, 100).active
    fit(m, g, x, epochs=1, checkpoint=tmp_path / "k.pt", **SETTINGS)
    assert {"model", "guide", "optimizer", "scheduler"} <= set(load_checkpoint(tmp_path / "k.pt"))
    assert "params" not in load_checkpoint(tmp_path / "k.pt")
