"""The VRNN model, its two guides, the batched sequence sites and per-frame evaluation."""
from __future__ import annotations

import math

import pyro
import pytest
import torch
import torch.distributions as td
from pyro import poutine

from ppgen.data import load_synthetic
from ppgen.evaluate.sequences import (continuation_log_likelihood, continue_sequences, elbo_per_frame, sequence_metrics,
                                      states_after_prefix, stepwise_log_weights)
from ppgen.guides import GUIDES, FilteringGuide, SmoothingGuide, check_sites
from ppgen.guides.vrnn import reverse_padded
from ppgen.infer import fit
from ppgen.models import MODELS
from ppgen.models.vrnn import VRNN
from ppgen import priors
from ppgen.priors import STEP_PRIORS, StandardNormalStep
from ppgen.infer.objectives import ELBOS, TraceELBO, log_importance_weights
from ppgen.distributions.site_sequence import SiteSequence, Step, normal

D, Z, H = 12, 3, 16
GUIDE_CLASSES = [FilteringGuide, SmoothingGuide]


@pytest.fixture(autouse=True)
def _seed():
    pyro.clear_param_store()
    torch.manual_seed(0)
    pyro.set_rng_seed(0)


def ragged(B=4, T=7, lengths=(7, 5, 2, 6), p=0.3, d=D):
    x = (torch.rand(B, T, d) < p).float()
    mask = torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]
    return x * mask[..., None], mask


def pair(guide_cls=FilteringGuide, **kw):
    model = VRNN(D, Z, H, **kw)
    return model, guide_cls.for_model(model)


def traces(model, guide, x, mask, particles=None):
    m, g = (pyro.plate("_p", particles, dim=-2)(f) if particles else f for f in (model, guide))
    gt = poutine.trace(g).get_trace(x, mask)
    mt = poutine.trace(poutine.replay(m, trace=gt)).get_trace(x, mask)
    return mt, gt


def seq_log_weight(model, guide, x, mask, z):
    """Per-sequence log p(x, z) - log q(z | x) at given z_t (``{name: value}``), [B]."""
    model_c, guide_c = poutine.condition(model, data=z), poutine.condition(guide, data=z)
    gt = poutine.trace(guide_c).get_trace(x, mask)
    mt = poutine.trace(model_c).get_trace(x, mask)
    total = 0.0
    for tr, sign in ((mt, 1.0), (gt, -1.0)):
        tr.compute_log_prob()
        for name, site in tr.nodes.items():
            if site["type"] == "sample" and name[0] in "zx":
                total = total + sign * site["log_prob"]
    return total


# -- structure -----------------------------------------------------------------------------------
def test_registries():
    assert MODELS["vrnn"] is VRNN
    assert GUIDES["vrnn_filtering"] is FilteringGuide and GUIDES["vrnn_smoothing"] is SmoothingGuide
    assert set(STEP_PRIORS) == {"learned", "standard"}


@pytest.mark.parametrize("guide_cls", GUIDE_CLASSES)
@pytest.mark.parametrize("rnn", ["gru", "lstm"])
def test_sites_names_shapes_and_masks(guide_cls, rnn):
    model, guide = pair(guide_cls, rnn=rnn)
    x, mask = ragged()
    mt, gt = traces(model, guide, x, mask)
    T = x.shape[1]
    z_sites = [f"z_{t}" for t in range(T)]
    assert [n for n, s in gt.nodes.items() if s["type"] == "sample" and n != "data"] == z_sites
    assert set(check_sites(model, guide, x, mask)) - {"data"} == set(z_sites)
    mt.compute_log_prob(), gt.compute_log_prob()
    for t in range(T):
        assert mt.nodes[f"z_{t}"]["value"].shape == (4, Z)
        assert mt.nodes[f"x_{t}"]["is_observed"] and torch.equal(mt.nodes[f"x_{t}"]["value"], x[:, t])
        for tr, name in ((mt, f"z_{t}"), (mt, f"x_{t}"), (gt, f"z_{t}")):
            lp = tr.nodes[name]["log_prob"]
            assert lp.shape == (4,)
            assert torch.all(lp[~mask[:, t]] == 0) and torch.all(lp[mask[:, t]] != 0)
    # with a particle plate every site gains the leading particle dim
    mt, gt = traces(model, guide, x, mask, particles=3)
    assert gt.nodes["z_0"]["value"].shape == (3, 4, Z)
    mt.compute_log_prob()
    assert mt.nodes["x_6"]["log_prob"].shape == (3, 4)


def test_prior_swaps_in_one_line():
    model, guide = pair()
    x, mask = ragged()
    model.prior = StandardNormalStep(Z)
    mt, _ = traces(model, guide, x, mask)
    fn = mt.nodes["z_3"]["fn"]
    assert torch.all(fn.mean == 0) and torch.allclose(fn.variance, torch.ones(4, Z))
    assert not list(model.prior.parameters())


def test_a_prior_that_does_not_fit_fails_on_assignment_naming_what_fits():
    model, guide = pair()
    learned = model.prior
    cases = [(priors.StandardNormal(Z), "per-step prior.*StandardNormalStep\\(3\\).*vector"),
             (StandardNormalStep(Z + 1), "z_dim 3.*StandardNormalStep\\(3\\).*z_dim 4"),
             (priors.LearnedStepPrior(Z, H + 1), "hidden 16.*LearnedStepPrior\\(3, 16\\).*hidden 17"),
             (torch.nn.Linear(H, 2 * Z), "not a step prior")]
    for bad, message in cases:
        with pytest.raises(ValueError, match=message):
            model.prior = bad
        assert model.prior is learned                       # the model keeps the prior it had
    model.prior = priors.LearnedStepPrior(Z, H)             # one that fits is accepted
    assert isinstance(VRNN(D, Z, H, prior=StandardNormalStep(Z)).prior, StandardNormalStep)
    with pytest.raises(ValueError, match="per-step prior"):
        VRNN(D, Z, H, prior=priors.StandardNormal(Z))
    model.check_prior()                                     # what check_sites asks before training
    with pytest.raises(ValueError, match="per-step prior"):
        model.check_prior(priors.StandardNormal(Z))


def test_guides_own_only_their_heads():
    model = VRNN(D, Z, H)
    filtering, smoothing = FilteringGuide(model), SmoothingGuide(model)
    model_params = {id(p) for p in model.parameters()}
    for guide in (filtering, smoothing):
        assert not model_params & {id(p) for p in guide.parameters()}
    assert {n.split(".")[0] for n, _ in smoothing.named_parameters()} == {"head", "backward_rnn"}
    with pytest.raises(ValueError, match="another model"):
        check_sites(VRNN(D, Z, H), filtering, *ragged())
    with pytest.raises(TypeError, match="guides a VRNN"):
        FilteringGuide(torch.nn.Linear(2, 2))


def test_reverse_padded_keeps_padding_in_place():
    x = torch.arange(10.0).reshape(2, 5, 1)
    out = reverse_padded(x, torch.tensor([3, 5]))[..., 0]
    assert out.tolist() == [[2, 1, 0, 3, 4], [9, 8, 7, 6, 5]]


def test_smoothing_guide_sees_the_future_and_not_the_padding():
    model, guide = pair(SmoothingGuide)
    x, mask = ragged()
    fx = model.phi_x(x)
    base = torch.stack(guide.context(fx, mask), 1)
    x2 = x.clone()
    x2[0, 6] = 1 - x2[0, 6]                      # change the last frame of sequence 0
    x2[2, 4:] = 1.0                              # and the padding of sequence 2
    changed = torch.stack(guide.context(model.phi_x(x2), mask), 1)
    assert not torch.allclose(changed[0, 0], base[0, 0])   # b_0 depends on x_6
    assert torch.allclose(changed[2, :2], base[2, :2])     # padding never enters b_t


# -- the batched sites and the shared recurrence -------------------------------------------------
def test_site_sequence_matches_direct_log_prob():
    mask = torch.tensor([[True, True, True], [True, False, False]])
    seq = SiteSequence(normal, mask, (2,))
    locs = [torch.randn(2, 2) for _ in range(3)]
    values = []
    for t in range(3):
        step = seq.step(t, locs[t], torch.ones(2, 2))
        values.append(seq.record(step.sample()))
    for t in range(3):
        direct = td.Normal(locs[t], 1.0).log_prob(values[t]).sum(-1) * mask[:, t]
        assert torch.allclose(seq.log_prob()[..., t], direct)
    other = torch.zeros(2, 2)  # a value that was not recorded is scored directly, masked
    step1 = Step(seq, 1, (locs[1], torch.ones(2, 2)), torch.Size([2]))
    assert torch.allclose(step1.log_prob(other), td.Normal(locs[1], 1.0).log_prob(other).sum(-1) * mask[:, 1])
    assert step1.expand((5, 2)).batch_shape == (5, 2) and step1.expand((2,)) is step1


@pytest.mark.parametrize("guide_cls", GUIDE_CLASSES)
def test_reused_guide_states_give_identical_loss_and_gradients(guide_cls):
    model, guide = pair(guide_cls, rnn="lstm")
    x, mask = ragged()
    params = [*model.parameters(), *guide.parameters()]

    def loss_and_grads(reuse):
        pyro.set_rng_seed(1)
        gt = poutine.trace(guide).get_trace(x, mask)
        if not reuse:
            model.guide_states.clear()
        mt = poutine.trace(poutine.replay(model, trace=gt)).get_trace(x, mask)
        loss = -(mt.log_prob_sum() - gt.log_prob_sum())
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        return loss, grads

    (l1, g1), (l2, g2) = loss_and_grads(True), loss_and_grads(False)
    assert torch.allclose(l1, l2)
    for a, b in zip(g1, g2):
        assert (a is None and b is None) or torch.allclose(a, b, atol=1e-6)


def test_the_model_reuses_the_guides_states_up_to_the_first_different_z():
    model, guide = pair(SmoothingGuide)
    x, mask = ragged()
    calls = []
    model.rnn.register_forward_hook(lambda *_: calls.append(1))

    def model_rnn_calls(condition=None):
        gt = poutine.trace(guide).get_trace(x, mask)
        calls.clear()
        replayed = poutine.replay(model, trace=gt)
        poutine.trace(poutine.condition(replayed, data=condition) if condition else replayed).get_trace(x, mask)
        return len(calls)

    assert model_rnn_calls() == 0                                 # every h_t taken from the guide's pass
    assert model_rnn_calls({"z_4": torch.zeros(4, Z)}) == 3       # z_4 differs: h_4, h_5, h_6 recomputed
    guide(x, mask)
    model.guide_states.clear()
    calls.clear()
    model(x, mask)
    assert len(calls) == 7                                        # nothing offered: the model's own pass


def _scale_rnn_weights(model, x):
    with torch.no_grad():
        model.rnn.cell.weight_hh.mul_(1.5)      # as an optimizer step would


def _flip_a_frame(model, x):
    x[0, 0] = 1 - x[0, 0]


@pytest.mark.parametrize("change", [_scale_rnn_weights, _flip_a_frame])
def test_reused_states_are_refused_after_an_in_place_change(change):
    model, guide = pair()
    x, mask = ragged()
    gt = poutine.trace(guide).get_trace(x, mask)
    change(model, x)
    reused = poutine.trace(poutine.replay(model, trace=gt)).get_trace(x, mask)
    model.guide_states.clear()
    fresh = poutine.trace(poutine.replay(model, trace=gt)).get_trace(x, mask)
    assert torch.allclose(reused.log_prob_sum(), fresh.log_prob_sum())


def test_a_pending_guide_record_does_not_block_copies():
    import copy

    model, guide = pair()
    guide(*ragged())
    assert model.guide_states.pending and not copy.deepcopy(model).guide_states.pending


# -- masks and padding ---------------------------------------------------------------------------
@pytest.mark.parametrize("guide_cls", GUIDE_CLASSES)
def test_padding_does_not_change_per_sequence_weights(guide_cls):
    model, guide = pair(guide_cls)
    x, mask = ragged()
    lw = lambda x, mask: (pyro.set_rng_seed(3), log_importance_weights(model, guide, x, mask, num_particles=2))[1]
    base = lw(x, mask)
    longer = torch.cat([x, torch.zeros(4, 5, D)], 1), torch.cat([mask, torch.zeros(4, 5, dtype=torch.bool)], 1)
    assert torch.allclose(lw(*longer), base)
    garbage = x.clone()
    garbage[~mask] = 1.0                        # what padding holds must not matter
    assert torch.allclose(lw(garbage, mask), base)


@pytest.mark.parametrize("guide_cls", GUIDE_CLASSES)
def test_each_sequence_scores_the_same_alone_as_in_a_padded_batch(guide_cls):
    model, guide = pair(guide_cls)
    x, mask = ragged()
    z = {f"z_{t}": torch.randn(4, Z) for t in range(x.shape[1])}
    batch = seq_log_weight(model, guide, x, mask, z)
    for b, L in enumerate(mask.sum(-1).tolist()):
        alone = seq_log_weight(model, guide, x[b:b + 1, :L], mask[b:b + 1, :L],
                               {f"z_{t}": z[f"z_{t}"][b:b + 1] for t in range(L)})
        assert torch.allclose(alone, batch[b:b + 1], atol=1e-4), (b, alone, batch[b])


# -- a VRNN that reduces to a model with a known likelihood ---------------------------------------
def independent_bernoulli_vrnn(guide_cls, logits):
    """Emissions ignore z and h (decoder output = logits); prior N(0, I); guide = prior."""
    model = VRNN(D, Z, H, prior="standard")
    guide = guide_cls.for_model(model)
    with torch.no_grad():
        model.decoder[-1].weight.zero_()
        model.decoder[-1].bias.copy_(logits)
        guide.head[-1].weight.zero_()
        guide.head[-1].bias.copy_(torch.cat([torch.zeros(Z), torch.full((Z,), math.log(math.expm1(1 - 1e-4)))]))
    return model, guide


@pytest.mark.parametrize("guide_cls", GUIDE_CLASSES)
def test_elbo_is_the_exact_log_likelihood_when_latents_do_not_matter(guide_cls):
    logits = torch.randn(D)
    model, guide = independent_bernoulli_vrnn(guide_cls, logits)
    x, mask = ragged()
    exact = (td.Bernoulli(logits=logits).log_prob(x).sum(-1) * mask).sum(-1)   # [B]
    elbo = -TraceELBO()(model, guide, x, mask)
    assert torch.allclose(elbo, exact.sum(), atol=1e-3)
    lw = log_importance_weights(model, guide, x, mask, num_particles=5)
    assert torch.allclose(lw, exact.expand(5, -1), atol=1e-3)
    data = (x, mask)
    per_frame = float(exact.sum()) / int(mask.sum())
    m = sequence_metrics(model, guide, data, k=8, elbo_samples=2)
    assert m["test_elbo_per_frame_nats"] == pytest.approx(per_frame, abs=1e-4)
    assert m["test_iwae_per_frame_nats"] == pytest.approx(per_frame, abs=1e-4)
    assert m["iwae_k"] == 8 and m["frames"] == int(mask.sum()) and m["test_elbo_per_frame_nats"] < 0
    # the true continuation after 3 frames: the log-probability of the remaining real frames
    cont = td.Bernoulli(logits=logits).log_prob(x).sum(-1) * mask
    expected = float(cont[:, 3:].sum()) / int(mask[:, 3:].sum())
    assert continuation_log_likelihood(model, guide, x, mask, 3, k=6, chunk=4) == pytest.approx(expected, abs=1e-4)


def test_stepwise_weights_sum_to_the_importance_weights():
    model, guide = pair(SmoothingGuide)
    x, mask = ragged()
    pyro.set_rng_seed(5)
    draws = stepwise_log_weights(model, guide, x, mask, num_particles=3)
    pyro.set_rng_seed(5)
    lw = log_importance_weights(model, guide, x, mask, num_particles=3)
    assert draws.log_w.shape == (3, 4, 7) and len(draws.z) == 7
    assert torch.allclose(draws.log_w.sum(-1), lw, atol=1e-4)
    assert torch.all(draws.log_w[:, 2, 2:] == 0)   # sequence 2 has 2 real frames


# -- training, generation, continuation ---------------------------------------------------------
@pytest.mark.parametrize("guide_name", ["vrnn_filtering", "vrnn_smoothing"])
def test_guides_train_with_falling_loss(guide_name):
    data = load_synthetic("binary", n=40, T=16, seed=1)
    model = VRNN.for_data(data, z_dim=4, hidden=32)
    guide = GUIDES[guide_name].for_model(model)
    hist = fit(model, guide, data, epochs=6, batch_size=12, lr=3e-3, anneal_epochs=2, progress=False)
    assert all(math.isfinite(v) for v in hist.train_elbo + hist.val_elbo)
    assert hist.train_elbo[-1] > hist.train_elbo[0] + 50
    assert hist.val_elbo[-1] > hist.val_elbo[0]


@pytest.mark.parametrize("elbo", list(ELBOS))
@pytest.mark.parametrize("prior", list(STEP_PRIORS))
@pytest.mark.parametrize("guide_name", ["vrnn_filtering", "vrnn_smoothing"])
def test_every_guide_prior_and_objective_trains(guide_name, prior, elbo):
    data = load_synthetic("binary", n=20, T=10, seed=2)
    model = VRNN.for_data(data, z_dim=3, hidden=16, prior=prior)
    guide = GUIDES[guide_name].for_model(model)
    hist = fit(model, guide, data.train, epochs=15, batch_size=12, lr=1e-2, elbo=elbo,
               num_particles=3 if elbo == "iwae" else 1, progress=False)
    losses = torch.tensor(hist.step_loss)
    assert torch.isfinite(losses).all()
    assert losses[-4:].mean() < losses[:4].mean() - 20, (losses[:4], losses[-4:])


def test_normal_emissions_on_real_valued_sequences():
    data = load_synthetic("real", n=30, T=12)
    model = VRNN.for_data(data, z_dim=2, hidden=16)
    guide = FilteringGuide.for_model(model)
    assert model.likelihood.name == "normal" and model.x_dim == 8
    hist = fit(model, guide, data, epochs=4, batch_size=10, lr=3e-3, progress=False)
    assert hist.train_elbo[-1] > hist.train_elbo[0]
    assert model.sample(2, 5).shape == (2, 5, 8)
    assert math.isfinite(elbo_per_frame(model, guide, data.test, num_samples=2))


# -- dropout ------------------------------------------------------------------------------------
def _copy_with_dropout(model, p):
    other = VRNN(D, Z, H, dropout=p)
    other.load_state_dict(model.state_dict())
    return other


def test_dropout_is_off_in_eval_mode_and_on_in_training():
    plain, _ = pair()
    model = _copy_with_dropout(plain, 0.5)
    x, mask = ragged()
    z = {f"z_{t}": torch.randn(4, Z) for t in range(7)}

    def log_joint(m):
        tr = poutine.trace(poutine.condition(m, data=z)).get_trace(x, mask)
        return tr.log_prob_sum()

    plain.eval(), model.eval()
    assert torch.equal(log_joint(model), log_joint(plain))  # eval: the full network
    model.train()
    a, b = log_joint(model), log_joint(model)
    assert not torch.equal(a, b) and not torch.equal(a, log_joint(plain))  # training: thinned at random


def test_generation_runs_in_eval_mode_and_restores_the_mode():
    model = _copy_with_dropout(pair()[0], 0.5)
    model.train()
    torch.manual_seed(3)
    s_train = model.sample(3, 6, mean=True)
    assert model.training
    model.eval()
    torch.manual_seed(3)
    assert torch.equal(s_train, model.sample(3, 6, mean=True))


def test_dropout_trains_and_the_config_reaches_the_model():
    data = load_synthetic("binary", n=40, T=16, seed=1)
    model = VRNN.for_data(data, z_dim=4, hidden=32, dropout=0.3)
    guide = GUIDES["vrnn_smoothing"].for_model(model)
    hist = fit(model, guide, data, epochs=6, batch_size=12, lr=3e-3, anneal_epochs=2, progress=False)
    assert hist.train_elbo[-1] > hist.train_elbo[0] + 50 and hist.val_elbo[-1] > hist.val_elbo[0]
    from ppgen.runs.vrnn import build
    assert build({"dropout": 0.25}, data)[0].phi_x[-1].p == 0.25


def test_transposed_training_split_leaves_validation_and_test_alone():
    from ppgen.data import SequenceDataset
    from ppgen.runs.vrnn import training_split

    def split(n):
        x = torch.zeros(n, 5, 88)
        x[:, :, 40:50] = (torch.rand(n, 5, 10) < 0.3).float()
        return x, torch.ones(n, 5, dtype=torch.bool)

    data = SequenceDataset("rolls", split(6), split(2), split(3))
    x, mask = training_split({"transpose": 2}, data)
    assert x.shape == (30, 5, 88) and mask.shape == (30, 5)
    assert training_split({}, data) is data.train and training_split({"transpose": 0}, data) is data.train
    with pytest.raises(ValueError, match="semitones"):
        training_split({"transpose": -1}, data)


@pytest.mark.parametrize("p", [-0.1, 1.0])
def test_dropout_must_be_a_probability(p):
    with pytest.raises(ValueError, match="dropout"):
        VRNN(D, Z, H, dropout=p)


def test_generation_and_continuation_shapes():
    model, guide = pair(SmoothingGuide)
    x, mask = ragged()
    s = model.sample(3, 9)
    assert s.shape == (3, 9, D) and set(s.unique().tolist()) <= {0.0, 1.0}
    assert model.sample(2, 4, mean=True).shape == (2, 4, D)
    c = continue_sequences(model, guide, x, mask, steps=5, num_continuations=2, particles=4)
    assert c.shape == (2, 4, 5, D) and set(c.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("rnn", ["gru", "lstm"])
def test_continuation_starts_from_the_state_after_each_prefix(rnn):
    """When h_t ignores z (phi_z constant) the state after a prefix is a function of its real
    frames alone: the one the recurrence reaches running over that sequence by itself."""
    model, guide = pair(rnn=rnn)
    x, mask = ragged()
    with torch.no_grad():
        model.phi_z[0].weight.zero_()
    states = states_after_prefix(model, guide, x, mask, num=2, particles=3)
    assert len(states) == (2 if rnn == "lstm" else 1) and states[0].shape == (2, 4, H)
    for b, L in enumerate(mask.sum(-1).tolist()):
        alone = model.states(x[b:b + 1, :L], [torch.randn(1, Z)] * L)[-1]
        for got, want in zip(states, alone):
            assert torch.allclose(got[:, b], want.expand(2, H), atol=1e-6), b


# -- bad input -----------------------------------------------------------------------------------
def test_check_data_names_the_problem():
    model = VRNN(D, Z, H)
    x, mask = ragged()
    model.check_data(x, mask)
    cases = [
        ((x[0], mask), "shape \\[N, T, 12\\]"),
        ((torch.zeros(4, 7, D + 1), mask), "12 keys"),
        ((x, mask[:, :5]), "mask shape"),
        ((x, mask.float()), "bool"),
        ((x * 2, mask), "support"),
        ((torch.where(mask[..., None], x, torch.nan), mask), "non-finite"),
        ((x, mask & (torch.arange(4) != 1)[:, None]), "no real frames"),
        ((x, mask & (torch.arange(7) != 1)[None, :]), "real frame after padding"),
    ]
    for (xb, mb), message in cases:
        with pytest.raises(ValueError, match=message):
            model.check_data(xb, mb)
    guide = FilteringGuide.for_model(model)
    with pytest.raises(ValueError, match="training data: .*support"):
        fit(model, guide, (x * 2, mask), epochs=1, progress=False)
    with pytest.raises(ValueError, match="unknown rnn"):
        VRNN(D, rnn="transformer")
    with pytest.raises(ValueError, match="unknown prior"):
        VRNN(D, prior="vamp")
