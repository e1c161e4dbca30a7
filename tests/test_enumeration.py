"""Discrete latents summed out by enumeration and semi-supervised data, with a model written
as Pyro's SS-VAE M2 example writes it (Kingma et al., 2014): ``model(xs, ys=None)`` with the
label observed when given and latent otherwise, a guide marked ``config_enumerate``, a plate
``"data"`` without a size and an auxiliary classification pair. Checked against independent
computations: an importance sampler written here that loops over the classes, and Pyro's
``TraceEnum_ELBO``."""
import math

import arviz as az

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import TraceEnum_ELBO, config_enumerate
from torch import nn

import ppgen
from ppgen import diagnostics as Dg
from ppgen.data import MISSING, PartiallyLabelled
from ppgen.evaluate import evaluate, heldout_log_weights
from ppgen.evaluate import test_elbo as enumerated_test_elbo
from ppgen.guides.sites import label_site, plate_nesting, site_structure
from ppgen.infer import ELBOS, EnumELBO, fit
from ppgen.infer.importance import importance_sample

SETTINGS = dict(progress=False, device="cpu", seed=0)
X_DIM, CLASSES, Z_DIM = 12, 3, 2


def concat(*tensors):
    """Concatenate on the last dim after broadcasting the others (enumerated y has extra dims)."""
    shape = torch.broadcast_shapes(*(t.shape[:-1] for t in tensors))
    return torch.cat([t.expand(*shape, t.shape[-1]) for t in tensors], -1)


class SSVAE(nn.Module):
    """M2: p(y) p(z) p(x | y, z), y one-hot over CLASSES, z ~ N(0, I), x binary;
    guide q(y | x) q(z | x, y), y sampled only when not given (enumerated by config_enumerate)."""

    def __init__(self, hidden=32, aux_loss_multiplier=20.0):
        super().__init__()
        self.aux_loss_multiplier = aux_loss_multiplier
        self.encoder_y = nn.Sequential(nn.Linear(X_DIM, hidden), nn.Softplus(), nn.Linear(hidden, CLASSES),
                                       nn.Softmax(-1))
        self.encoder_z = nn.Sequential(nn.Linear(X_DIM + CLASSES, hidden), nn.Softplus(), nn.Linear(hidden, 2 * Z_DIM))
        self.decoder = nn.Sequential(nn.Linear(Z_DIM + CLASSES, hidden), nn.Softplus(), nn.Linear(hidden, X_DIM),
                                     nn.Sigmoid())

    def model(self, xs, ys=None):
        pyro.module("ss_vae", self)
        batch_size = xs.size(0)
        with pyro.plate("data"):
            zs = pyro.sample("z", dist.Normal(xs.new_zeros(batch_size, Z_DIM), xs.new_ones(batch_size, Z_DIM))
                             .to_event(1))
            ys = pyro.sample("y", dist.OneHotCategorical(xs.new_ones(batch_size, CLASSES) / CLASSES), obs=ys)
            probs = self.decoder(concat(zs, ys))
            pyro.sample("x", dist.Bernoulli(probs).to_event(1), obs=xs)

    def guide(self, xs, ys=None):
        with pyro.plate("data"):
            if ys is None:
                ys = pyro.sample("y", dist.OneHotCategorical(self.encoder_y(xs)))
            loc, log_scale = self.encoder_z(concat(xs, ys)).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))

    def model_classify(self, xs, ys=None):
        pyro.module("ss_vae", self)
        with pyro.plate("data"):
            if ys is not None:
                with poutine.scale(scale=self.aux_loss_multiplier):
                    pyro.sample("y_aux", dist.OneHotCategorical(self.encoder_y(xs)), obs=ys)

    def guide_classify(self, xs, ys=None):
        pass


def make_pair(seed=0, **kwargs):
    pyro.clear_param_store()
    torch.manual_seed(seed)
    ss = SSVAE(**kwargs)
    return ss, ss.model, config_enumerate(ss.guide, "parallel", expand=True)


def toy_data(n, seed=0):
    """Three classes, each a Bernoulli pattern over X_DIM pixels: x | c ~ Bernoulli(protos[c])."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.tensor([[0.9] * 4 + [0.1] * 8, [0.1] * 4 + [0.9] * 4 + [0.1] * 4, [0.1] * 8 + [0.9] * 4])
    labels = torch.randint(0, CLASSES, (n,), generator=g)
    return torch.bernoulli(protos[labels], generator=g), labels


def exact_in_y_log_px(ss, xs, k):
    """log p(x_n) by importance sampling written by hand: for each class c, k draws
    z ~ q(z | x, c), weights p(c) p(z) p(x | z, c) / q(z | x, c), summed over c exactly."""
    with torch.no_grad():
        per_class = []
        for c in range(CLASSES):
            ys = torch.zeros(xs.shape[0], CLASSES)
            ys[:, c] = 1.0
            loc, log_scale = ss.encoder_z(torch.cat([xs, ys], -1)).chunk(2, -1)
            q = torch.distributions.Normal(loc, log_scale.exp())
            z = q.sample((k,))  # [k, N, Z]
            log_pz = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
            probs = ss.decoder(torch.cat([z, ys.expand(k, -1, -1)], -1))
            log_px_z = torch.distributions.Bernoulli(probs).log_prob(xs).sum(-1)
            per_class.append(math.log(1.0 / CLASSES) + log_pz + log_px_z - q.log_prob(z).sum(-1))
        log_w = torch.logsumexp(torch.stack(per_class), 0)  # [k, N]
        return torch.logsumexp(log_w, 0) - math.log(k)


@pytest.fixture(scope="module")
def trained():
    x, labels = toy_data(240)
    ss, model, guide = make_pair()
    data = PartiallyLabelled.keep_fraction(x, labels, 0.1, seed=0)
    history = fit(model, guide, data, elbo="enum", aux=(ss.model_classify, ss.guide_classify), epochs=40,
                  batch_size=60, lr=3e-3, **SETTINGS)
    x_test, labels_test = toy_data(90, seed=1)
    return ss, model, guide, history, x_test, labels_test


def test_m2_semi_supervised_through_fit_evaluate_diagnostics_report(trained, tmp_path):
    ss, model, guide, history, x_test, labels_test = trained
    assert all(map(math.isfinite, history.train_elbo)) and history.train_elbo[-1] > history.train_elbo[0]
    assert len(history.aux_loss) == len(history.train_elbo) and history.aux_loss[-1] < history.aux_loss[0]

    torch.manual_seed(0)
    metrics = evaluate(model, guide, PartiallyLabelled(x_test, labels_test), k=500)
    # the accuracy key: q(y | x) on the test rows, well above chance (1/3) after 10% labels
    assert metrics["label_site"] == "y" and metrics["labelled"] == 90
    assert metrics["test_accuracy"] > 0.7
    # IWAE with y summed exactly, against the hand-written sampler over the classes
    torch.manual_seed(1)
    reference = exact_in_y_log_px(ss, x_test, 500)
    assert abs(metrics["test_iwae_nats"] - float(reference.mean())) < 0.1
    # the per-datapoint weights agree too, and the bound is above the enumerated ELBO
    torch.manual_seed(2)
    ours = torch.logsumexp(heldout_log_weights(model, guide, x_test, k=500), 0) - math.log(500)
    assert (ours - reference).abs().max() < 0.25
    assert metrics["test_iwae_nats"] > metrics["test_elbo_nats"]

    # the test ELBO is TraceEnum_ELBO's value on the same draws
    pyro.set_rng_seed(3)
    ours = enumerated_test_elbo(model, guide, x_test, num_samples=4, batch_size=1000)
    pyro.set_rng_seed(3)
    ss.eval()
    pyros = -TraceEnum_ELBO(max_plate_nesting=1, num_particles=4, vectorize_particles=True).loss(model, guide, x_test)
    ss.train()
    assert ours == pytest.approx(pyros / x_test.shape[0], abs=1e-4)

    # k-hat from the same weights: its log p(x) is the IWAE above
    torch.manual_seed(0)
    diag = Dg.importance_diagnostics(model, guide, PartiallyLabelled(x_test, labels_test), num_samples=500)  # x alone
    assert float(diag["log_px"].mean()) == pytest.approx(metrics["test_iwae_nats"], abs=0.05)
    assert np.isfinite(diag["khat"].values).all()

    # InferenceData: y drawn (one-hot), and the attributes say so
    idata = Dg.to_inference_data(model, guide, x_test, num_samples=20)
    y = idata.posterior["y"].values
    assert y.shape[:3] == (1, 20, 90) and set(np.unique(y)) <= {0.0, 1.0}
    assert idata.posterior.attrs["enumerated_sites"] == "y"

    report = ppgen.report(model, guide, PartiallyLabelled(x_test, labels_test), out=tmp_path / "m2.html",
                          importance_samples=100, num_samples=20, max_obs=40)  # labelled data report x alone
    assert report.path.exists() and report.posterior_path.exists()
    assert az.from_netcdf(str(report.posterior_path)).vi_diagnostics.sizes["datapoint"] == 40


def test_enum_objective_is_traceenum_elbo_on_the_same_params():
    x, _ = toy_data(20)
    ss, model, guide = make_pair()
    objective = ELBOS["enum"](1)
    assert isinstance(objective, EnumELBO)
    objective(model, guide, x)  # finds max_plate_nesting from the trace
    assert objective.max_plate_nesting == plate_nesting(model, guide, x) == 1
    pyro.set_rng_seed(5)
    ours = objective(model, guide, x)
    grads = torch.autograd.grad(ours, list(ss.encoder_y.parameters()))
    pyro.set_rng_seed(5)
    reference = TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(model, guide, x)
    reference_grads = torch.autograd.grad(reference, list(ss.encoder_y.parameters()))
    assert float(ours.detach()) == pytest.approx(float(reference.detach()), rel=1e-6)
    for a, b in zip(grads, reference_grads):
        assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("elbo", ["trace", "meanfield", "iwae"])
def test_config_enumerate_guide_refused_by_objectives_that_would_sample_it(elbo):
    x, _ = toy_data(20)
    ss, model, guide = make_pair()
    with pytest.raises(ValueError, match="enum") as error:
        fit(model, guide, x, elbo=elbo, epochs=1, **SETTINGS)
    assert "\n" not in str(error.value) and "'y'" in str(error.value)


def test_site_terms_of_an_enumerated_sample_sum_to_its_log_weights():
    x, _ = toy_data(8)
    ss, model, guide = make_pair()
    with torch.no_grad(), pyro.validation_enabled(False):
        sample = importance_sample(model, guide, x, num_particles=5)
        assert sample.enumerated == ("y",)
        assert sample.guide_sites["y"]["value"].shape == (CLASSES, 5, 8, CLASSES)
        terms = sample.site_terms()
        log_w = sample.log_weights()
    assert log_w.shape == (5, 8) and set(terms) == {"y", "z", "x"}
    assert torch.allclose(sum(terms.values()), log_w, atol=1e-4)
    assert (terms["y"] <= 1e-5).all()  # -KL(r || p(y)) <= 0


def test_plate_without_size_is_not_subsampling():
    x, labels = toy_data(10)
    ss, model, guide = make_pair()
    structure = site_structure(model, x)
    assert structure.data_plate == "data" and not structure.subsampled
    assert structure.local == ("z", "y") and structure.global_latents == ()
    y = torch.nn.functional.one_hot(labels, CLASSES).float()
    assert label_site(model, x, y) == "y"


def test_partial_labels_with_aux_loss_beat_chance_and_the_unlabelled_half_counts():
    x, labels = toy_data(150)
    ss, model, guide = make_pair(seed=1)
    data = PartiallyLabelled.keep_fraction(x, labels, 0.1, seed=1)
    assert int(data.known.sum()) == sum(max(1, round(0.1 * int((labels == c).sum()))) for c in range(CLASSES))
    before = evaluate(model, guide, PartiallyLabelled(x, labels), k=10)["test_accuracy"]
    fit(model, guide, data, PartiallyLabelled(x[:30], labels[:30]), elbo="enum",
        aux=(ss.model_classify, ss.guide_classify), epochs=25, batch_size=50, lr=5e-3, **SETTINGS)
    after = evaluate(model, guide, PartiallyLabelled(x, labels), k=10)["test_accuracy"]
    assert after > max(0.6, before)


def test_partially_labelled_data_and_their_errors_are_one_line():
    x, labels = toy_data(10)
    data = PartiallyLabelled(x, torch.where(labels > 0, labels, MISSING), num_classes=CLASSES)
    (xl, yl), (xu,) = data.split(x, data.labels)
    assert xl.shape[0] + xu.shape[0] == 10 and yl.shape == (xl.shape[0], CLASSES) and (yl.sum(-1) == 1).all()
    assert PartiallyLabelled(x, labels, one_hot=False).labelled()[1].dtype == torch.long
    for bad in (labels.float(), labels[:5], labels + 5):
        with pytest.raises((ValueError, TypeError)) as error:
            PartiallyLabelled(x, bad, num_classes=CLASSES)
        assert "\n" not in str(error.value)
    ss, model, guide = make_pair()
    with pytest.raises(ValueError, match="PartiallyLabelled") as error:
        fit(model, guide, x, elbo="enum", aux=(ss.model_classify, ss.guide_classify), epochs=1, **SETTINGS)
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="label") as error:
        label_site(ss.model, x, None)
    assert "\n" not in str(error.value)
