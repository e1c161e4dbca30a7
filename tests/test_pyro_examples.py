"""Pyro's own examples as their authors wrote them, through fit -> evaluate ->
importance_diagnostics -> report, every number checked against an independent computation
(Pyro's own Trace_ELBO, importance samplers written here from Pyro traces, ArviZ's psislw).

The models are written here in the style of Pyro's examples (our own code, not copies):

* ``examples/vae/vae.py``: an encoder/decoder VAE whose latent site is named ``latent`` (a
  name ppgen once reserved for a dimension);
* ``examples/dmm.py``: a deep Markov model over ragged piano rolls, steps ``z_1 .. z_T``
  counted from 1 under ``pyro.markov``, padded frames masked by ``.mask(m).to_event(1)`` (the
  mask one wrapper below ``Independent``), the model called as
  ``model(mini_batch, mini_batch_reversed, mini_batch_mask, mini_batch_seq_lengths)``.

The Bayesian-regression tutorial's ``PyroModule[nn.Linear]`` and the semi-supervised M2 VAE
have their own files (tests/test_broadcasting.py, tests/test_enumeration.py).
"""
import json
import math

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO
from torch import nn

import ppgen
from ppgen import diagnostics as D
from ppgen.evaluate import latents

SETTINGS = dict(progress=False, device="cpu", seed=0)


# -- examples/vae/vae.py, in its style -------------------------------------------------------------

class Encoder(nn.Module):
    def __init__(self, x_dim, z_dim, hidden_dim):
        super().__init__()
        self.x_dim = x_dim
        self.fc1 = nn.Linear(x_dim, hidden_dim)
        self.fc21 = nn.Linear(hidden_dim, z_dim)
        self.fc22 = nn.Linear(hidden_dim, z_dim)
        self.softplus = nn.Softplus()

    def forward(self, x):
        x = x.reshape(-1, self.x_dim)
        hidden = self.softplus(self.fc1(x))
        return self.fc21(hidden), torch.exp(self.fc22(hidden))


class Decoder(nn.Module):
    def __init__(self, x_dim, z_dim, hidden_dim):
        super().__init__()
        self.fc1 = nn.Linear(z_dim, hidden_dim)
        self.fc21 = nn.Linear(hidden_dim, x_dim)
        self.softplus = nn.Softplus()
        self.sigmoid = nn.Sigmoid()

    def forward(self, z):
        return self.sigmoid(self.fc21(self.softplus(self.fc1(z))))


class PyroVAE(nn.Module):
    """p(z) N(0, I), p(x|z) Bernoulli(decoder(z)); q(z|x) N(encoder(x)); site ``latent``."""

    def __init__(self, x_dim=64, z_dim=4, hidden_dim=64):
        super().__init__()
        self.encoder = Encoder(x_dim, z_dim, hidden_dim)
        self.decoder = Decoder(x_dim, z_dim, hidden_dim)
        self.x_dim, self.z_dim = x_dim, z_dim

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z_loc = x.new_zeros(torch.Size((x.shape[0], self.z_dim)))
            z_scale = x.new_ones(torch.Size((x.shape[0], self.z_dim)))
            z = pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))
            loc_img = self.decoder(z)
            pyro.sample("obs", dist.Bernoulli(loc_img, validate_args=False).to_event(1), obs=x.reshape(-1, self.x_dim))

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            z_loc, z_scale = self.encoder(x)
            pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))


@pytest.fixture(scope="module")
def trained_vae(digits):
    x = (digits.train[:600] > 8).float()
    test = (digits.test[:80] > 8).float()
    pyro.clear_param_store()
    torch.manual_seed(0)
    vae = PyroVAE()
    history = ppgen.fit(vae.model, vae.guide, x, epochs=40, batch_size=100, lr=3e-3, **SETTINGS)
    return vae, history, test


def vae_log_weights(vae, x, k):
    """log p(x, z_k) - log q(z_k | x) for k draws per row, written out by hand: [k, N]."""
    with torch.no_grad():
        loc, scale = vae.encoder(x)
        q = dist.Normal(loc, scale).to_event(1)
        z = q.sample((k,))
        log_lik = dist.Bernoulli(vae.decoder(z), validate_args=False).to_event(1).log_prob(x)
        return log_lik + dist.Normal(0.0, 1.0).expand([vae.z_dim]).to_event(1).log_prob(z) - q.log_prob(z)


def test_pyro_vae_trains_and_its_numbers_agree_with_pyro_and_a_hand_written_sampler(trained_vae):
    vae, history, test = trained_vae
    assert history.train_elbo[-1] > history.train_elbo[0] + 5
    pyro.set_rng_seed(1)
    metrics = ppgen.evaluate(vae.model, vae.guide, test, k=1000, elbo_samples=400)
    assert set(metrics) >= {"test_elbo_nats", "test_iwae_nats", "kl_nats", "active_units"}
    assert "frames" not in metrics  # not a sequence model
    with torch.no_grad():
        pyro_elbo = -Trace_ELBO(num_particles=400, vectorize_particles=True).loss(vae.model, vae.guide, test) / len(test)
    assert metrics["test_elbo_nats"] == pytest.approx(pyro_elbo, abs=0.05)
    torch.manual_seed(2)
    log_w = vae_log_weights(vae, test, 1000).double()
    hand_iwae = float((torch.logsumexp(log_w, 0) - math.log(1000)).mean())
    assert metrics["test_iwae_nats"] == pytest.approx(hand_iwae, abs=0.1)
    # per-row k-hat: ppgen's against ArviZ's psislw on the hand-drawn weights (independent draws: compare the means)
    diag = D.importance_diagnostics(vae.model, vae.guide, test, 1000)
    _, az_khat = az.psislw(log_w.T.numpy())
    assert float(diag["khat"].mean()) == pytest.approx(float(az_khat.mean()), abs=0.05)
    assert float(diag["log_px"].mean()) == pytest.approx(hand_iwae, abs=0.1)


def test_a_site_named_latent_keeps_its_name_in_the_report_and_posterior_file(trained_vae, tmp_path):
    vae, history, test = trained_vae
    out = ppgen.report(vae.model, vae.guide, test, out=tmp_path / "vae.html", history=history, num_samples=20,
                       importance_samples=200)
    idata = az.from_netcdf(str(out.posterior_path))
    assert idata.posterior["latent"].dims == ("chain", "draw", "datapoint", "latent_")
    assert json.loads(idata.posterior.attrs["dims"]) == {"datapoint": "datapoint", "time": "time",
                                                         "latent": "latent_", "feature": "feature"}
    assert idata.observed_data["obs"].dims == ("datapoint", "feature")
    assert "active units of latent" in out.html and "KL(q || p) of latent per datapoint" in out.html
    assert idata.vi_diagnostics.attrs["num_samples"] == 200
    # all-local: az.loo refuses (no group), ppgen.compare reads the file
    with pytest.raises(TypeError):
        az.loo(idata)
    table = ppgen.compare(out, D.importance_diagnostics(vae.model, vae.guide, test, 200), names=["report", "again"])
    assert table.loc["report", "elpd"] == pytest.approx(float(idata.vi_diagnostics["log_px"].sum()))
    assert table["elpd_diff"].max() < 2.0 * table["dse"].max() + 1.0  # the same fit twice: within Monte Carlo error


def test_a_report_fails_on_the_structure_before_the_expensive_draws(trained_vae, tmp_path, monkeypatch):
    vae, _, test = trained_vae

    def unplated_model(x):
        pyro.module("decoder", vae.decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("latent", dist.Normal(x.new_zeros(x.shape[0], vae.z_dim), 1.0).to_event(1))
            pyro.sample("obs", dist.Bernoulli(vae.decoder(z), validate_args=False).to_event(1), obs=x)
        pyro.sample("noise", dist.Normal(torch.zeros(3), 1.0))  # a batch dim of size 3 in no plate

    def guide(x):
        vae.guide(x)
        pyro.sample("noise", dist.Normal(torch.zeros(3), 1.0))

    def expensive(*args, **kwargs):
        raise AssertionError("the importance draws ran before the structure was checked")

    monkeypatch.setattr(D, "importance_diagnostics", expensive)
    with pytest.raises(ValueError, match="belongs to no plate"):
        ppgen.report(unplated_model, guide, test, out=tmp_path / "r.html")


# -- examples/dmm.py, in its style -------------------------------------------------------------------

KEYS, Z, T_MAX = 8, 3, 12


class Emitter(nn.Module):
    """p(x_t | z_t): independent Bernoulli notes."""

    def __init__(self, input_dim, z_dim, emission_dim):
        super().__init__()
        self.lin_z_to_hidden = nn.Linear(z_dim, emission_dim)
        self.lin_hidden_to_input = nn.Linear(emission_dim, input_dim)

    def forward(self, z_t):
        return torch.sigmoid(self.lin_hidden_to_input(torch.relu(self.lin_z_to_hidden(z_t))))


class GatedTransition(nn.Module):
    """p(z_t | z_{t-1}) = N(loc(z_{t-1}), scale(z_{t-1}))."""

    def __init__(self, z_dim, transition_dim):
        super().__init__()
        self.lin_hidden = nn.Linear(z_dim, transition_dim)
        self.lin_loc = nn.Linear(transition_dim, z_dim)
        self.lin_scale = nn.Linear(transition_dim, z_dim)

    def forward(self, z_t_1):
        hidden = torch.relu(self.lin_hidden(z_t_1))
        return z_t_1 + self.lin_loc(hidden), nn.functional.softplus(self.lin_scale(hidden)) + 1e-3


class Combiner(nn.Module):
    """q(z_t | z_{t-1}, x_{t:T}) from the previous latent and the backward RNN's state."""

    def __init__(self, z_dim, rnn_dim):
        super().__init__()
        self.lin_z_to_hidden = nn.Linear(z_dim, rnn_dim)
        self.lin_hidden_to_loc = nn.Linear(rnn_dim, z_dim)
        self.lin_hidden_to_scale = nn.Linear(rnn_dim, z_dim)

    def forward(self, z_t_1, h_rnn):
        h_combined = 0.5 * (torch.tanh(self.lin_z_to_hidden(z_t_1)) + h_rnn)
        return self.lin_hidden_to_loc(h_combined), nn.functional.softplus(self.lin_hidden_to_scale(h_combined)) + 1e-3


def reverse_sequences(mini_batch, seq_lengths):
    """Each sequence's first ``length`` frames in reverse order (padding left in place)."""
    out = torch.zeros_like(mini_batch)
    for b, length in enumerate(seq_lengths.tolist()):
        out[b, :length] = mini_batch[b, :length].flip(0)
    return out


class DMM(nn.Module):
    """The deep Markov model of Krishnan et al. (2017) as Pyro's example writes it."""

    def __init__(self, input_dim=KEYS, z_dim=Z, emission_dim=16, transition_dim=16, rnn_dim=16):
        super().__init__()
        self.emitter = Emitter(input_dim, z_dim, emission_dim)
        self.trans = GatedTransition(z_dim, transition_dim)
        self.combiner = Combiner(z_dim, rnn_dim)
        self.rnn = nn.RNN(input_size=input_dim, hidden_size=rnn_dim, nonlinearity="relu", batch_first=True)
        self.z_0 = nn.Parameter(torch.zeros(z_dim))
        self.z_q_0 = nn.Parameter(torch.zeros(z_dim))
        self.h_0 = nn.Parameter(torch.zeros(1, 1, rnn_dim))

    def model(self, mini_batch, mini_batch_reversed, mini_batch_mask, mini_batch_seq_lengths, annealing_factor=1.0):
        T_max = mini_batch.size(1)
        pyro.module("dmm", self)
        z_prev = self.z_0.expand(mini_batch.size(0), self.z_0.size(0))
        with pyro.plate("z_minibatch", len(mini_batch)):
            for t in pyro.markov(range(1, T_max + 1)):
                z_loc, z_scale = self.trans(z_prev)
                with poutine.scale(scale=annealing_factor):
                    z_t = pyro.sample("z_%d" % t, dist.Normal(z_loc, z_scale)
                                      .mask(mini_batch_mask[:, t - 1:t]).to_event(1))
                emission_probs_t = self.emitter(z_t)
                pyro.sample("obs_x_%d" % t, dist.Bernoulli(emission_probs_t).mask(mini_batch_mask[:, t - 1:t]).to_event(1),
                            obs=mini_batch[:, t - 1, :])
                z_prev = z_t

    def guide(self, mini_batch, mini_batch_reversed, mini_batch_mask, mini_batch_seq_lengths, annealing_factor=1.0):
        T_max = mini_batch.size(1)
        pyro.module("dmm", self)
        h_0_contig = self.h_0.expand(1, mini_batch.size(0), self.rnn.hidden_size).contiguous()
        rnn_output, _ = self.rnn(mini_batch_reversed, h_0_contig)
        rnn_output = reverse_sequences(rnn_output, mini_batch_seq_lengths)
        z_prev = self.z_q_0.expand(mini_batch.size(0), self.z_q_0.size(0))
        with pyro.plate("z_minibatch", len(mini_batch)):
            for t in pyro.markov(range(1, T_max + 1)):
                z_loc, z_scale = self.combiner(z_prev, rnn_output[:, t - 1, :])
                with poutine.scale(scale=annealing_factor):
                    z_t = pyro.sample("z_%d" % t, dist.Normal(z_loc, z_scale)
                                      .mask(mini_batch_mask[:, t - 1:t]).to_event(1))
                z_prev = z_t


def piano_rolls(n, seed):
    """Ragged binary sequences of 3..T_MAX frames (a slow random walk over KEYS keys), padded with
    zeros: (mini_batch, mini_batch_reversed, mini_batch_mask, mini_batch_seq_lengths) as
    Pyro's polyphonic loader gives them (a float 0/1 mask, integer lengths)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, T_MAX + 1, (n,), generator=g)
    x = torch.zeros(n, T_MAX, KEYS)
    for b in range(n):
        key = int(torch.randint(KEYS, (), generator=g))
        for t in range(int(lengths[b])):
            key = (key + int(torch.randint(-1, 2, (), generator=g))) % KEYS
            x[b, t, key] = 1.0
            x[b, t, (key + 3) % KEYS] = float(torch.rand((), generator=g) < 0.5)
    mask = (torch.arange(T_MAX)[None] < lengths[:, None]).float()
    return x, reverse_sequences(x, lengths), mask, lengths


@pytest.fixture(scope="module")
def trained_dmm():
    pyro.clear_param_store()
    torch.manual_seed(0)
    dmm = DMM()
    train, test = piano_rolls(48, 0), piano_rolls(16, 1)
    history = ppgen.fit(dmm.model, dmm.guide, train, epochs=25, batch_size=16, lr=1e-2, **SETTINGS)
    return dmm, history, test


def dmm_log_weights(dmm, data, k):
    """log p(x, z_k) - log q(z_k | x) per sequence for k guide runs, from Pyro's own traces
    (masked log-densities summed by Pyro): [k, N]."""
    out = []
    with torch.no_grad():
        for _ in range(k):
            guide_trace = poutine.trace(dmm.guide).get_trace(*data)
            model_trace = poutine.trace(poutine.replay(dmm.model, trace=guide_trace)).get_trace(*data)
            model_trace.compute_log_prob()
            guide_trace.compute_log_prob()
            log_w = sum(site["log_prob"] for site in model_trace.nodes.values() if site["type"] == "sample")
            log_w = log_w - sum(site["log_prob"] for site in guide_trace.nodes.values() if site["type"] == "sample")
            out.append(log_w)
    return torch.stack(out).double()


def test_dmm_trains_and_evaluate_gives_per_frame_numbers_that_agree_with_pyro(trained_dmm):
    dmm, history, test = trained_dmm
    assert history.train_elbo[-1] > history.train_elbo[0]
    x, _, mask, lengths = test
    pyro.set_rng_seed(3)
    metrics = ppgen.evaluate(dmm.model, dmm.guide, test, k=300, elbo_samples=200)
    frames = int(mask.sum())
    assert metrics["frames"] == frames == int(lengths.sum()) and metrics["sequences"] == len(x)
    assert metrics["test_elbo_per_frame_nats"] == pytest.approx(metrics["test_elbo_nats"] * len(x) / frames)
    assert metrics["test_iwae_per_frame_nats"] == pytest.approx(metrics["test_iwae_nats"] * len(x) / frames)
    with torch.no_grad():
        pyro_elbo = -Trace_ELBO(num_particles=200, vectorize_particles=True, max_plate_nesting=1).loss(
            dmm.model, dmm.guide, *test) / len(x)
    assert metrics["test_elbo_nats"] == pytest.approx(pyro_elbo, abs=0.05 * T_MAX)  # per sequence; 0.05 per frame
    torch.manual_seed(4)
    log_w = dmm_log_weights(dmm, test, 300)
    hand_iwae = float((torch.logsumexp(log_w, 0) - math.log(300)).mean())
    assert metrics["test_iwae_nats"] == pytest.approx(hand_iwae, abs=0.1)
    # steps z_1..z_T are one variable: one KL, one active-units number
    assert "kl_nats" in metrics and "active_units" in metrics
    assert not any(key.startswith(("kl_nats_z", "active_units_z")) for key in metrics)
    diag = D.importance_diagnostics(dmm.model, dmm.guide, test, 300)
    _, az_khat = az.psislw(log_w.T.numpy())
    assert float(diag["khat"].mean()) == pytest.approx(float(az_khat.mean()), abs=0.05)


def test_dmm_inference_data_has_one_time_variable_counted_from_one_with_padding_nan(trained_dmm, tmp_path):
    dmm, history, test = trained_dmm
    x, _, mask, _ = test
    out = ppgen.report(dmm.model, dmm.guide, test, out=tmp_path / "dmm.html", history=history, num_samples=10,
                       importance_samples=100)
    idata = az.from_netcdf(str(out.posterior_path))
    z, obs = idata.posterior["z"], idata.observed_data["obs_x"]
    assert z.dims == ("chain", "draw", "datapoint", "time", "latent") and z.shape == (1, 10, len(x), T_MAX, Z)
    assert list(z["time"].values) == list(range(1, T_MAX + 1))
    padded = mask.numpy() == 0
    assert np.isnan(z.values[0, :, padded]).all() and not np.isnan(z.values[0, :, ~padded]).any()
    assert np.isnan(obs.values[padded]).all() and not np.isnan(obs.values[~padded]).any()
    assert np.isnan(idata.latent_kl["z"].values[padded]).all()
    assert not any(latents.step_site(name) for g in idata.groups() for name in idata[g].data_vars)
    assert out.html.count("KL(q || p) of") == 1 and out.html.count("active units of") == 1
    assert "per frame" in out.html


def test_padding_masked_under_to_event_never_enters_the_latent_metrics(trained_dmm):
    """A DMM-style guide whose codes vary between sequences only on padded frames: on the real
    frames every sequence has the same q(z_t), so no unit is active; counted with the padding,
    all would be (the fault that reported 18 active units where the real frames give 0)."""
    dmm, _, test = trained_dmm
    x, _, mask, lengths = test

    def padded_noise_guide(mini_batch, mini_batch_reversed, mini_batch_mask, mini_batch_seq_lengths):
        with pyro.plate("z_minibatch", len(mini_batch)):
            for t in pyro.markov(range(1, mini_batch.size(1) + 1)):
                real = mini_batch_mask[:, t - 1:t].bool()
                loc = torch.where(real, torch.zeros(Z), 3.0 * mini_batch_seq_lengths[:, None].float().expand(-1, Z))
                pyro.sample("z_%d" % t, dist.Normal(loc, 0.01).mask(mini_batch_mask[:, t - 1:t]).to_event(1))

    metrics = ppgen.evaluate(dmm.model, padded_noise_guide, test, k=20, elbo_samples=5)
    assert metrics["active_units"] == 0
    draws = latents.variable_draws(padded_noise_guide, *test, sites=[f"z_{t}" for t in range(1, T_MAX + 1)],
                                   num_samples=4)
    padded = mask == 0
    assert torch.isnan(draws[:, padded]).all() and not torch.isnan(draws[:, ~padded]).any()
    # the same draws with the padding counted: every unit active
    raw = torch.where(torch.isnan(draws), 3.0 * lengths[None, :, None, None].float().expand_as(draws), draws)
    assert latents.active_units(latents.latent_activity(raw)) == Z
    # KL of padded frames is 0 (masked), real frames give the KL of N(0, 0.01) against the transition
    assert math.isfinite(metrics["kl_nats"])


@pytest.mark.parametrize("where", ["mask_then_to_event", "to_event_then_mask", "poutine_mask"])
def test_a_mask_anywhere_pyro_allows_is_read(where):
    """The same per-step model with its mask put three ways: identical frames, NaN padding, KL."""
    torch.manual_seed(0)
    x, _, mask, lengths = piano_rolls(6, 2)

    def masked(base, m):
        if where == "mask_then_to_event":
            return base.mask(m[:, None]).to_event(1)
        if where == "to_event_then_mask":
            return base.to_event(1).mask(m)
        return base.to_event(1)  # masked by poutine.mask around the sites

    def program(observe):
        def run(x, mask):
            with pyro.plate("seq", x.shape[0]):
                for t in pyro.markov(range(1, x.shape[1] + 1)):
                    m = mask[:, t - 1].bool()
                    with poutine.mask(mask=m) if where == "poutine_mask" else poutine.block(hide=[]):
                        z = pyro.sample(f"z_{t}", masked(dist.Normal(torch.zeros(x.shape[0], 2), 1.0), m))
                        if observe:
                            logits = z.sum(-1, keepdim=True).expand(*z.shape[:-1], KEYS)
                            pyro.sample(f"x_{t}", masked(dist.Bernoulli(logits=logits), m), obs=x[:, t - 1])
        return run

    model, guide = program(True), program(False)
    metrics = ppgen.evaluate(model, guide, (x, mask), k=10, elbo_samples=2)
    assert metrics["frames"] == int(lengths.sum())
    idata = D.to_inference_data(model, guide, (x, mask), 3)
    padded = mask.numpy() == 0
    assert np.isnan(idata.posterior["z"].values[0, :, padded]).all()
    assert not np.isnan(idata.posterior["z"].values[0, :, ~padded]).any()
    assert abs(metrics["kl_nats"]) < 1e-5  # q = p on every real frame


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # ArviZ 0.23's plotting on matplotlib 3.11
def test_the_arviz_functions_the_readme_calls_meaningful_run_on_the_inference_data(trained_vae):
    import matplotlib.pyplot as plt

    vae, _, test = trained_vae
    idata = D.to_inference_data(vae.model, vae.guide, test[:20], 10)
    one = {"datapoint": [0], "latent_": [0, 1]}
    assert az.summary(idata, kind="stats").shape[1] == 4
    assert az.hdi(idata.posterior)["latent"].shape == (20, vae.z_dim, 2)
    az.plot_posterior(idata, var_names=["latent"], coords=one)
    az.plot_pair(idata, var_names=["latent"], coords=one)
    az.plot_ppc(idata, num_pp_samples=5)
    plt.close("all")


def test_obs_mask_keeps_observed_and_imputed_entries_apart():
    """``pyro.sample(..., obs=x, obs_mask=m)``: Pyro splits the site into ``x_observed``
    (masked by m) and a latent ``x_unobserved`` (masked by ~m) that the guide imputes; each is
    NaN where its mask leaves it out, and the imputed rows are the only ones with activity."""
    torch.manual_seed(0)
    n, p = 20, 5
    x, m = torch.randn(n, p), torch.rand(n) > 0.3

    def model(x, m):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z.sum(-1, keepdim=True).expand(*z.shape[:-1], p), 1.0).to_event(1),
                        obs=x, obs_mask=m)

    def guide(x, m):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            with poutine.mask(mask=~m):
                pyro.sample("x_unobserved", dist.Normal(torch.zeros(p), 1.0).to_event(1))

    metrics = ppgen.evaluate(model, guide, (x, m), k=20, elbo_samples=5)
    assert metrics["kl_nats_z"] == pytest.approx(0.0, abs=1e-6)  # q(z) = p(z)
    idata = D.to_inference_data(model, guide, (x, m), 5)
    imputed, observed = idata.posterior["x_unobserved"].values, idata.observed_data["x_observed"].values
    np.testing.assert_array_equal(np.isnan(imputed[0, 0, :, 0]), m.numpy())
    np.testing.assert_array_equal(np.isnan(observed[:, 0]), ~m.numpy())
    assert np.isfinite(D.importance_diagnostics(model, guide, (x, m), 50)["khat"].values).all()
