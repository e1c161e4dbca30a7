"""The one training loop (ppgen.infer.loop), the one resume check, and runs as Family objects."""
import hashlib

import pytest
import torch

from ppgen.guides import GUIDES
from ppgen.infer.checkpoint import load_checkpoint
from ppgen.infer.loop import NonFiniteLossError, Step, train
from ppgen.infer.resume import check_settings
from ppgen.priors import PRIORS, STEP_PRIORS
from ppgen.runs import FAMILIES, family

CONFIG = {"epochs": 4, "batch_size": 8, "seed": 3}


def two_optimiser_step(calls: list, nan_at: int | None = None):
    """y = a x + b fitted by two optimisers, ``a``'s first; ``calls`` logs the order of updates.
    From global step ``nan_at`` on, the second loss is NaN."""

    def make(dev):
        a, b = torch.nn.Linear(1, 1, bias=False), torch.nn.Linear(1, 1, bias=False)
        opt_a, opt_b = torch.optim.SGD(a.parameters(), lr=0.1), torch.optim.Adam(b.parameters(), lr=0.1)

        def update(batch, t, apply):
            x, y = batch
            loss_a = (a(x) + b(torch.ones_like(x)).detach() - y).pow(2).mean()
            apply(loss_a, opt_a, "a loss")
            calls.append("a")
            loss_b = (a(x).detach() + b(torch.ones_like(x)) - y).pow(2).mean()
            if nan_at is not None and t >= nan_at:
                loss_b = loss_b * float("nan")
            apply(loss_b, opt_b, "b loss")
            calls.append("b")
            return {"loss_a": loss_a.item(), "loss_b": loss_b.item()}

        return Step(update, {"a": a, "b": b, "opt_a": opt_a, "opt_b": opt_b})

    return make


@pytest.fixture
def data():
    x = torch.linspace(-1, 1, 20).unsqueeze(-1)
    return x, 2 * x + 0.5


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_updates_in_order_and_resume_exactly(data, tmp_path):
    calls = []
    full, hist = train(two_optimiser_step(calls), data, CONFIG, device="cpu", progress=False)
    assert calls[:4] == ["a", "b", "a", "b"] and len(calls) == 2 * 4 * 3  # 3 batches of <= 8 rows per epoch
    assert hist["epoch"] == [1, 2, 3, 4] and hist["loss_a"][-1] < hist["loss_a"][0]
    path = tmp_path / "run.pt"
    train(two_optimiser_step([]), data, {**CONFIG, "epochs": 2}, device="cpu", progress=False, checkpoint=path)
    assert {"a", "b", "opt_a", "opt_b", "rng", "config", "history", "epoch"} <= load_checkpoint(path).keys()
    resumed, hist2 = train(two_optimiser_step([]), data, CONFIG, device="cpu", progress=False, checkpoint=path,
                           resume=True)
    for name in ("a", "b"):
        assert torch.equal(full.parts[name].weight, resumed.parts[name].weight), name
    assert hist["loss_a"] == hist2["loss_a"] and hist["loss_b"] == hist2["loss_b"]


def test_non_finite_loss_stops_before_its_update_and_keeps_the_checkpoint(data, tmp_path):
    path = tmp_path / "run.pt"
    train(two_optimiser_step([]), data, {**CONFIG, "epochs": 1}, device="cpu", progress=False, checkpoint=path)
    before = sha(path)
    calls = []
    with pytest.raises(NonFiniteLossError, match=r"non-finite b loss \(nan\) at epoch 2, step 1; training stopped "
                                                 r"before the update; the last good checkpoint \(.*, epoch 1\) is intact"):
        train(two_optimiser_step(calls, nan_at=3), data, CONFIG, device="cpu", progress=False, checkpoint=path,
              resume=True)
    assert calls == ["a"] and sha(path) == before
    with pytest.raises(RuntimeError, match="epoch 1, step 1; .*no checkpoint was requested"):
        train(two_optimiser_step([], nan_at=0), data, CONFIG, device="cpu", progress=False)


def test_early_stopping_restores_the_best_weights(data):
    scores = iter([1.0, 3.0, 2.0, 2.5, 0.0, 0.0])
    seen = {}

    def make(dev):
        base = two_optimiser_step([])(dev)

        def score():
            seen[len(seen) + 1] = base.parts["a"].weight.detach().clone()
            return next(scores)

        return Step(base.update, base.parts, score=score, score_name="val", keep_best=("a",))

    step, hist = train(make, data, {**CONFIG, "epochs": 6, "patience": 1}, device="cpu", progress=False)
    assert hist["val"] == [1.0, 3.0, 2.0, 2.5] and hist["stopped_early"]
    assert hist["best_epoch"] == 2 and hist["best_val"] == 3.0
    assert torch.equal(step.parts["a"].weight, seen[2]) and not torch.equal(seen[2], seen[4])


def test_resume_check_names_every_difference():
    check_settings({"lr": 0.1, "epochs": 2}, {"lr": 0.1, "epochs": 5})  # more epochs extend a run
    with pytest.raises(ValueError, match=r"lr was 0.1, now 0.2, z_dim was None, now 4"):
        check_settings({"lr": 0.1, "epochs": 2}, {"lr": 0.2, "epochs": 2, "z_dim": 4})
    with pytest.raises(ValueError, match="'cosine' learning-rate schedule was laid out over epochs=2"):
        check_settings({"epochs": 2, "lr_schedule": "cosine"}, {"epochs": 3, "lr_schedule": "cosine"})


def test_families_declare_what_they_take():
    assert set(FAMILIES) == {"vae", "sparse_vae", "hvae", "vrnn", "conv_vae", "gan", "vaegan", "deconv"}
    for fam in FAMILIES.values():
        assert set(fam.priors) <= {*PRIORS, *STEP_PRIORS} and set(fam.guides) <= set(GUIDES), fam.name
    assert family("vrnn").priors == tuple(STEP_PRIORS) == ("learned", "standard")
    assert family("vrnn").guides == ("vrnn_filtering", "vrnn_smoothing")
    assert family("sparse_vae").priors == ("laplace", "spike_and_slab")  # the one rule: Prior.sparse
    assert all(PRIORS[p].sparse for p in family("sparse_vae").priors)
    assert "vrnn_filtering" not in family("conv_vae").guides and not family("gan").priors
    assert family("hvae").guides == ("ladder",) and "ladder" not in family("vae").guides
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        family("nope")


def test_family_settings_fill_defaults_once_and_refuse_what_it_does_not_take():
    vaegan = family("vaegan").settings({"model": "vaegan", "data": "digits", "lr": None, "feature_weight": 0.5,
                                        "rnn": None})
    assert vaegan["lr"] == 1e-3 and vaegan["feature_weight"] == 0.5 and vaegan["adversarial_weight"] == 10.0
    assert "rnn" not in vaegan and vaegan["betas"] == [0.5, 0.999]  # as config.json stores it
    with pytest.raises(ValueError, match=r"vaegan does not take --rnn, --transpose; its options: .*--feature-weight"):
        family("vaegan").settings({"model": "vaegan", "data": "digits", "rnn": "lstm", "transpose": 3})
    gan = family("gan").settings({"model": "gan", "data": "digits"})
    assert gan["spectral_norm"] is True and "prior" not in gan and "image_shape" not in gan
    assert family("vae").settings({"model": "vae", "data": "digits"})["epochs"] == 1000
    with pytest.raises(ValueError, match="unknown prior 'gauss'"):
        family("vae").settings({"model": "vae", "prior": "gauss"})
    with pytest.raises(ValueError, match="vrnn does not take the prior 'laplace'; it takes priors: learned, "
                                         "standard; guides: vrnn_filtering, vrnn_smoothing"):
        family("vrnn").settings({"model": "vrnn", "prior": "laplace"})
