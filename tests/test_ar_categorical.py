"""The autoregressive categorical p(x|z) = prod_d p(x_d | x_<d, z) against exact enumeration, and in
the VAE family (training under every objective, the CLI, refusals)."""
from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import pyro
import pytest
import torch
from scipy.stats import chi2

from ppgen import likelihoods
from ppgen.data import Dataset
from ppgen.distributions import AutoregressiveCategorical
from ppgen.guides import GUIDES
from ppgen.infer import fit
from ppgen.infer.objectives import ELBOS, TraceELBO, log_importance_weights
from ppgen.likelihoods import LIKELIHOODS
from ppgen.models import VAE, ConvVAE, SparseVAE
from ppgen.models.vaegan import VAEGAN
from ppgen.nn.made import MaskedAutoregressiveNet

PPGEN = str(Path(sys.executable).parent / "ppgen")


@pytest.fixture(autouse=True)
def _seed():
    pyro.clear_param_store()
    torch.manual_seed(0)
    pyro.set_rng_seed(0)


def random_net(D=3, L=3, H=5):
    """A net with every weight drawn N(0, 1): the masked weights are far from 0."""
    net = MaskedAutoregressiveNet(D, H, levels=L)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_()
    if D > 1:   # with one dimension there is nothing to condition on
        assert (net.w_out * net.out_mask).abs().sum() > 0 and (net.w_direct * net.direct_mask).abs().sum() > 0
    return net


def every_vector(D, L):
    """All L^D vectors of {0..L-1}^D, first dimension most significant: ``[L^D, D]``."""
    return torch.tensor(list(itertools.product(range(L), repeat=D)), dtype=torch.float32)


def exact_probs(net, context):
    """p(x | c) for every x: ``[L^D, *batch]``."""
    values = every_vector(net.x_dim, net.levels)
    return AutoregressiveCategorical(net, context).log_prob(values.reshape(-1, *[1] * (context.dim() - 1),
                                                                           net.x_dim)).exp()


# -- the distribution against enumeration --------------------------------------------------------------
@pytest.mark.parametrize("D, L, H", [(1, 4, 3), (3, 3, 5), (4, 2, 6), (2, 5, 2)])
def test_probabilities_sum_to_one(D, L, H):
    net = random_net(D, L, H)
    context = 2 * torch.randn(3, net.context_features)
    probs = exact_probs(net, context)
    assert probs.shape == (L ** D, 3)
    assert torch.allclose(probs.sum(0), torch.ones(3), atol=1e-5)
    assert probs.max() < 0.99   # not a degenerate law that sums to 1 trivially


def test_logits_of_x_d_depend_on_earlier_dimensions_only():
    D, L = 5, 4
    net = random_net(D, L, 9)
    context = torch.randn(net.context_features)
    x = torch.randint(0, L, (D,)).float()
    for d in range(D):
        later = x.clone()
        later[d:] = (x[d:] + torch.randint(1, L, (D - d,))) % L          # every x_{>=d} changed
        assert torch.allclose(net(later, context)[: d + 1], net(x, context)[: d + 1], atol=1e-6), d
        if d > 0:
            earlier = x.clone()
            earlier[:d] = (x[:d] + torch.randint(1, L, (d,))) % L         # every x_{<d} changed
            assert (net(earlier, context)[d] - net(x, context)[d]).abs().max() > 1e-3, d
    # the same, exactly, on the derivative: d logit_{d,l} / d x_j = 0 for j >= d, for every level l
    jac = torch.autograd.functional.jacobian(lambda v: net(v, context), torch.rand(D) * (L - 1))   # [D, L, D]
    for d in range(D):
        assert torch.all(jac[d, :, d:] == 0), d
        assert d == 0 or torch.all(jac[d, :, :d].abs().sum(0) > 0), d   # and each earlier dimension is used


def test_zero_masked_weights_give_the_factorised_categorical():
    lik = LIKELIHOODS["autoregressive_categorical"](6, levels=5, hidden=4)
    with torch.no_grad():
        lik.net.w_out.zero_(), lik.net.w_direct.zero_()
    raw = torch.randn(2, 3, lik.out_features)
    x = torch.randint(0, 5, (2, 3, 6)).float()
    factorised = LIKELIHOODS["categorical"](6, levels=5)
    assert torch.allclose(lik(raw).log_prob(x), factorised(raw[..., 4:]).log_prob(x), atol=1e-5)


def test_two_levels_with_level_0_pinned_at_0_is_the_autoregressive_bernoulli():
    """softmax([0, f]) = (1 - sigmoid(f), sigmoid(f)): a 2-level net whose level-0 logits are 0
    (weights and context) is the binary net with logits f; checks the two against each other."""
    from ppgen.distributions import AutoregressiveBernoulli
    D, H = 5, 7
    binary = MaskedAutoregressiveNet(D, H)
    with torch.no_grad():
        for p in binary.parameters():
            p.normal_()
    two = MaskedAutoregressiveNet(D, H, levels=2)
    with torch.no_grad():
        two.w_in.copy_(binary.w_in)
        two.w_out.zero_(), two.w_direct.zero_()
        two.w_out[1::2] = binary.w_out                 # rows (d, level 1)
        two.w_direct[1::2] = binary.w_direct
    context = torch.randn(4, binary.context_features)
    c_out = torch.stack([torch.zeros(4, D), context[:, H:]], -1).flatten(-2)   # (d, level) order, level 0 at 0
    x = (torch.rand(6, 4, D) < 0.5).float()
    expected = AutoregressiveBernoulli(binary, context).log_prob(x)
    got = AutoregressiveCategorical(two, torch.cat([context[:, :H], c_out], -1)).log_prob(x)
    assert torch.allclose(got, expected, atol=1e-5)


def test_samples_follow_the_enumerated_law_and_the_mean_matches_it():
    D, L, n = 3, 3, 20000
    net = random_net(D, L, 5)
    context = torch.randn(net.context_features)
    d = AutoregressiveCategorical(net, context)
    probs = exact_probs(net, context).flatten()                          # [27]
    draws = d.sample((n,))
    assert draws.shape == (n, D) and draws.dtype == torch.float32
    assert set(draws.unique().tolist()) <= set(range(L))
    codes = (draws * torch.tensor([L * L, L, 1.0])).sum(-1).long()      # itertools order
    counts = torch.bincount(codes, minlength=L ** D).double()
    expected = n * probs.double()
    statistic = ((counts - expected) ** 2 / expected).sum().item()
    assert statistic < chi2.ppf(0.999, L ** D - 1), (statistic, counts, expected)
    exact_mean = (probs[:, None] * every_vector(D, L)).sum(0)
    d.mean_samples = 4000
    assert torch.allclose(d.mean, exact_mean, atol=0.05), (d.mean, exact_mean)


def test_a_sampler_that_ignored_the_dependence_would_fail_the_frequency_check():
    """The chi-square check above has power: the product of the exact marginals is rejected."""
    D, L, n = 3, 3, 20000
    net = random_net(D, L, 5)
    probs = exact_probs(net, torch.randn(net.context_features)).reshape(L, L, L)
    marginals = [probs.sum((1, 2)), probs.sum((0, 2)), probs.sum((0, 1))]
    product = (marginals[0][:, None, None] * marginals[1][None, :, None] * marginals[2][None, None, :]).flatten()
    counts = torch.bincount(torch.multinomial(product, n, replacement=True), minlength=L ** D).double()
    expected = n * probs.flatten().double()
    assert ((counts - expected) ** 2 / expected).sum().item() > chi2.ppf(0.999, L ** D - 1)


def test_shapes_broadcast_over_particles_and_expand():
    lik = LIKELIHOODS["autoregressive_categorical"](4, levels=3, hidden=6)
    assert lik.out_features == 6 + 4 * 3 and lik.input_scale == 2.0
    raw = torch.randn(5, 2, lik.out_features)                          # [K, B, C]
    x = torch.randint(0, 3, (2, 4)).float()                            # [B, D]
    d = lik(raw)
    assert d.batch_shape == (5, 2) and d.event_shape == (4,)
    assert d.log_prob(x).shape == (5, 2)
    e = lik(raw[0, 0]).expand((7, 2))
    assert e.batch_shape == (7, 2) and e.sample().shape == (7, 2, 4)
    assert lik.mean(raw).shape == (5, 2, 4)


def test_scored_in_float32_when_the_net_runs_in_bfloat16():
    """As under ``--precision bf16``: the decoder's output and the masked net in bf16 (autocast),
    draws and log-densities in float32, and close to the float32 values."""
    net = random_net(3, 4, 5)
    context = torch.randn(2, net.context_features)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        d = AutoregressiveCategorical(net, context.to(torch.bfloat16))
        x = d.sample((3,))
        log_p = d.log_prob(x)
        assert net(x, d.context).dtype == torch.bfloat16   # the net did run in bf16
    assert x.dtype == torch.float32 and log_p.dtype == torch.float32
    assert torch.allclose(log_p, AutoregressiveCategorical(net, context).log_prob(x), atol=0.2)


def test_errors_name_the_problem():
    net = MaskedAutoregressiveNet(4, 6, levels=3)
    with pytest.raises(ValueError, match="context has 3 features"):
        AutoregressiveCategorical(net, torch.randn(3))
    with pytest.raises(ValueError, match="binary"):
        AutoregressiveCategorical(MaskedAutoregressiveNet(4, 6), torch.randn(10))
    with pytest.raises(ValueError, match="levels must be at least 2"):
        MaskedAutoregressiveNet(4, 6, levels=1)
    lik = LIKELIHOODS["autoregressive_categorical"](4, levels=17)
    for bad in (17.0, -1.0, 2.5, math.nan):
        with pytest.raises(ValueError, match="17-level autoregressive categorical"
                           if not math.isnan(bad) else "non-finite"):
            lik.check(torch.tensor([0.0, 16.0, bad, 3.0]))
    lik.check(torch.tensor([0.0, 16.0, 5.0, 3.0]))    # in the support: no error


def test_validation_refuses_values_outside_the_support():
    d = AutoregressiveCategorical(random_net(3, 3, 4), torch.randn(4 + 9), validate_args=True)
    with pytest.raises(ValueError):
        d.log_prob(torch.tensor([0.0, 3.0, 1.0]))


# -- levels from the data ------------------------------------------------------------------------------
def test_levels_come_from_the_dataset(digits):
    assert likelihoods.kwargs_for_data("autoregressive_categorical", digits) == {"levels": 17}
    assert likelihoods.kwargs_for_data("categorical", digits) == {"levels": 17}
    assert likelihoods.kwargs_for_data("normal", digits) == {}
    binary = Dataset("b", torch.zeros(4, 3), torch.zeros(2, 3), torch.zeros(2, 3), "bernoulli", {})
    assert likelihoods.kwargs_for_data("autoregressive_categorical", binary) == {"levels": 2}
    counts = Dataset("c", torch.zeros(4, 3), torch.zeros(2, 3), torch.zeros(2, 3), "binomial", {"total_count": 9})
    assert likelihoods.kwargs_for_data("autoregressive_categorical", counts) == {"levels": 10}
    model = VAE.for_data(digits, 4, likelihood="autoregressive_categorical", hidden=16)
    assert model.likelihood.levels == 17 and model.likelihood.input_scale == 16.0
    assert GUIDES["diag_normal"].for_model(model, hidden=16).encoder[0].scale == 16.0   # the encoder sees x / 16


# -- in the VAE family ---------------------------------------------------------------------------------
def test_vae_elbo_is_the_exact_likelihood_when_latents_do_not_matter():
    """Decoder output fixed (last layer's weights 0, bias = c), guide = prior N(0, I): the ELBO and
    every importance weight equal log p(x | c) under the autoregressive law."""
    D, L = 5, 4
    model = VAE(D, 2, likelihood="autoregressive_categorical", likelihood_kwargs={"levels": L, "hidden": 6}, hidden=8)
    guide = GUIDES["diag_normal"].for_model(model, hidden=8)
    context = torch.randn(model.likelihood.out_features)
    with torch.no_grad():
        for p in model.likelihood.net.parameters():
            p.normal_()
        model.decoder[-1].weight.zero_()
        model.decoder[-1].bias.copy_(context)
        guide.head.weight.zero_()
        guide.head.bias.copy_(torch.cat([torch.zeros(2), torch.full((2,), math.log(math.expm1(1 - 1e-4)))]))
    x = torch.randint(0, L, (3, D)).float()
    exact = AutoregressiveCategorical(model.likelihood.net, context).log_prob(x)     # [3]
    assert torch.allclose(-TraceELBO()(model, guide, x), exact.sum(), atol=1e-3)
    assert torch.allclose(log_importance_weights(model, guide, x, num_particles=4), exact.expand(4, -1), atol=1e-3)


@pytest.mark.parametrize("elbo", sorted(ELBOS))
def test_vae_trains_on_digits_under_every_objective(digits, elbo):
    model = VAE.for_data(digits, 4, likelihood="autoregressive_categorical", hidden=32,
                         likelihood_kwargs={"levels": 17, "hidden": 16})
    guide = GUIDES["diag_normal"].for_model(model, hidden=32)
    hist = fit(model, guide, digits, epochs=4, batch_size=100, lr=3e-3, elbo=elbo,
               num_particles=3 if elbo == "iwae" else 1, progress=False)
    assert all(math.isfinite(v) for v in hist.train_elbo + hist.val_elbo)
    assert hist.train_elbo[-1] > hist.train_elbo[0] + 5 and hist.val_elbo[-1] > hist.val_elbo[0], hist
    draws = model.sample(3, mean=False)
    assert draws.shape == (3, 64) and set(draws.unique().tolist()) <= set(range(17))
    means = model.sample(2)
    assert means.shape == (2, 64) and ((means >= 0) & (means <= 16)).all()


def test_sparse_vae_takes_it(digits):
    model = SparseVAE.for_data(digits, 4, likelihood="autoregressive_categorical", hidden=16)
    assert model.likelihood.name == "autoregressive_categorical" and model.likelihood.levels == 17


def test_bad_data_get_a_clear_error(digits):
    model = VAE.for_data(digits, 4, likelihood="autoregressive_categorical", hidden=16)
    guide = GUIDES["diag_normal"].for_model(model, hidden=16)
    with pytest.raises(ValueError, match="17-level autoregressive categorical"):
        model.check_data(digits.train[:5] + 0.5)
    with pytest.raises(ValueError, match="outside the support"):
        fit(model, guide, digits.train[:20] * 2, epochs=1, progress=False)


@pytest.mark.parametrize("cls", [ConvVAE, VAEGAN])
@pytest.mark.parametrize("name", ["autoregressive_categorical", "autoregressive_bernoulli"])
def test_deconv_models_refuse_autoregressive_likelihoods(digits, cls, name):
    with pytest.raises(ValueError, match=f"cannot use likelihood '{name}'.*parameters per pixel"):
        cls.for_data(digits, 4, likelihood=name, width=8)
    cls.for_data(digits, 4, likelihood="categorical", width=8)   # a per-pixel likelihood still works


# -- the CLI ----------------------------------------------------------------------------------------------
def ppgen(*args):
    return subprocess.run([PPGEN, *map(str, args)], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("model", ["vae", "sparse_vae"])
def test_cli_trains_and_reports_active_units(tmp_path, model):
    out = tmp_path / model
    result = ppgen("train", model, "--data", "digits", "--likelihood", "autoregressive_categorical", "--epochs", "2",
                   "--hidden", "32", "--z-dim", "4", "--iwae-k", "20", "--quiet", "--device", "cpu", "--out", out)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["active_units"] <= 4 and metrics["epochs"] == 2
    assert metrics["test_iwae_nats"] < 0 and math.isfinite(metrics["test_elbo_nats"])
    assert json.loads((out / "config.json").read_text())["likelihood"] == "autoregressive_categorical"


def test_cli_refuses_it_for_conv_vae_in_one_line(tmp_path):
    result = ppgen("train", "conv_vae", "--data", "digits", "--likelihood", "autoregressive_categorical", "--epochs", "1",
                   "--quiet", "--device", "cpu", "--out", tmp_path / "c")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot use likelihood 'autoregressive_categorical'" in lines[0], result.stderr
