"""The speed-ups on private torch internals (ppgen.distributions.fast): each private internal they
rely on is pinned here, so a torch or Pyro upgrade that changes one fails loudly, and each gives
the values and gradients of the plain version it replaces."""
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.distributions.utils as tdu

from ppgen.distributions.fast import (LogSoftmaxCategorical, ReparamNormal, UnitNormal, unchanged_since,
                                     validation_default, version_stamp)
from ppgen.infer.record import Record, sample_sites


def grads(value, *tensors):
    return torch.autograd.grad(value.sum(), tensors)


# -- the internals ------------------------------------------------------------------------------
def test_pin_distribution_validation_flag():
    """ReparamNormal reads the instance flag Distribution._validate_args (copied from the class
    default that pyro.enable_validation sets) and _extended_shape."""
    for flag in (True, False):
        with pyro.validation_enabled(flag):
            assert dist.Normal(0.0, 1.0)._validate_args is flag
    assert dist.Normal(torch.zeros(3), 1.0)._extended_shape((2,)) == (2, 3)


def test_pin_standard_normal_is_what_normal_rsample_draws():
    """ReparamNormal draws eps with torch.distributions.utils._standard_normal, as Normal.rsample does."""
    assert callable(tdu._standard_normal)
    loc, scale = torch.randn(4, 3), torch.rand(4, 3) + 0.5
    torch.manual_seed(0)
    plain = dist.Normal(loc, scale).rsample((2,))
    torch.manual_seed(0)
    eps = tdu._standard_normal((2, 4, 3), dtype=loc.dtype, device=loc.device)
    torch.manual_seed(0)
    fast = ReparamNormal(loc, scale).rsample((2,))
    assert torch.equal(plain, loc + eps * scale) and torch.equal(fast, plain)


def test_pin_categorical_private_attributes():
    """LogSoftmaxCategorical sets Categorical's _param and _num_events instead of running its __init__."""
    c = torch.distributions.Categorical(logits=torch.randn(2, 5))
    assert c._param is c.logits and c._num_events == 5
    assert "_instance" in torch.distributions.Categorical.expand.__code__.co_varnames


def test_pin_tensor_version_counts_in_place_changes():
    p = torch.nn.Parameter(torch.randn(3))
    v = p._version
    with torch.no_grad():
        p.mul_(2.0)
    assert p._version > v
    v = p._version
    p.grad = torch.ones(3)
    torch.optim.SGD([p], lr=0.1).step()
    assert p._version > v
    x = torch.zeros(2)
    v = x._version
    _ = x + 1  # out of place: no change
    assert x._version == v


def test_pin_plate_subsample_sites_are_dropped():
    """The lean ELBO's records drop plate subsample sites (Pyro's public site_is_subsample)."""
    def prog():
        with pyro.plate("data", 3):
            pyro.sample("z", dist.Normal(0.0, 1.0))

    record = Record()
    with record:
        prog()
    assert set(record.sites) == {"data", "z"}
    assert [name for name, _ in sample_sites(record)] == ["z"]


# -- same values and gradients as the plain versions -----------------------------------------------
def test_reparam_normal_matches_normal_in_value_and_gradients():
    raw_loc, raw_scale = torch.randn(6, 4, requires_grad=True), torch.randn(6, 4, requires_grad=True)

    def run(cls):
        torch.manual_seed(1)
        q = cls(raw_loc * 2.0, raw_scale.exp())
        z = q.rsample()
        lp = q.log_prob(z)
        return lp, grads(lp, raw_loc, raw_scale)

    (fast, g_fast), (plain, g_plain) = run(ReparamNormal), run(dist.Normal)
    assert torch.allclose(fast, plain, atol=1e-6)
    for a, b in zip(g_fast, g_plain):
        assert torch.allclose(a, b, atol=1e-5)
    q = ReparamNormal(torch.zeros(3), torch.ones(3))
    q.rsample()
    other = torch.randn(3)                                  # not its draw: the general formula
    assert torch.allclose(q.log_prob(other), dist.Normal(0.0, 1.0).log_prob(other))
    z = q.rsample()
    z_copy = z.clone()                                      # equal values, another tensor: general formula
    assert torch.allclose(q.log_prob(z_copy), q.log_prob(z))
    q = ReparamNormal(torch.zeros(3), torch.ones(3))
    with pyro.validation_enabled(True):                     # validation: the general, checking formula
        q = ReparamNormal(torch.zeros(3), torch.ones(3))
        z = q.rsample()
        with pytest.raises(ValueError):
            q.log_prob(torch.full((3,), math.nan))
        assert torch.allclose(q.log_prob(z), dist.Normal(0.0, 1.0).log_prob(z))


def test_log_softmax_categorical_matches_categorical():
    raw = torch.randn(3, 4, 6, requires_grad=True)
    fast, plain = LogSoftmaxCategorical(raw), dist.Categorical(logits=raw)
    x = torch.randint(0, 6, (3, 4))
    assert torch.allclose(fast.log_prob(x), plain.log_prob(x))
    assert torch.allclose(grads(fast.log_prob(x), raw)[0], grads(plain.log_prob(x), raw)[0], atol=1e-6)
    assert torch.allclose(fast.logits, plain.logits) and torch.allclose(fast.probs, plain.probs)
    assert torch.allclose(fast.entropy(), plain.entropy())
    assert fast.batch_shape == plain.batch_shape and fast.param_shape == plain.param_shape
    torch.manual_seed(2)
    a = fast.sample((5,))
    torch.manual_seed(2)
    assert torch.equal(a, plain.sample((5,)))
    wide = fast.expand((2, 3, 4))
    assert type(wide) is LogSoftmaxCategorical and torch.allclose(wide.log_prob(x), plain.expand((2, 3, 4)).log_prob(x))
    assert torch.equal(fast.enumerate_support(), plain.enumerate_support())
    with pytest.raises(ValueError, match="one-dimensional"):
        LogSoftmaxCategorical(torch.tensor(1.0))


def test_version_stamp_sees_in_place_changes_and_other_tensors():
    a, b = torch.zeros(2), torch.ones(2)
    stamp = version_stamp((a, b))
    assert unchanged_since(stamp, (a, b))
    assert not unchanged_since(stamp, (a, b.clone()))       # another tensor, equal values
    assert not unchanged_since(stamp, (a,))
    a.add_(1.0)
    assert not unchanged_since(stamp, (a, b))


def test_pin_validation_default_is_what_pyro_sets():
    """validation_default() reads the class default Distribution._validate_args that Pyro's
    validation switch sets; StandardNormal's cached UnitNormal is keyed on it."""
    for flag in (True, False):
        with pyro.validation_enabled(flag):
            assert torch.distributions.Distribution._validate_args is flag
            assert validation_default() is flag


def test_unit_normal_matches_normal_in_value_and_gradient():
    z = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    zeros = torch.zeros(3, dtype=torch.float64)
    fast, plain = UnitNormal(zeros, zeros + 1.0), dist.Normal(zeros, zeros + 1.0)
    torch.testing.assert_close(fast.log_prob(z), plain.log_prob(z), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grads(fast.log_prob(z), z)[0], grads(plain.log_prob(z), z)[0])
    torch.testing.assert_close(fast.expand([2, 3]).log_prob(z[:1]), plain.expand([2, 3]).log_prob(z[:1]))
    torch.testing.assert_close(torch.distributions.kl_divergence(dist.Normal(z.detach(), 2.0), fast),
                               torch.distributions.kl_divergence(dist.Normal(z.detach(), 2.0), plain))
