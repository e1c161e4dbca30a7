"""The public Python API checks its numeric arguments at the entry point and names them as
the caller wrote them (``k must be a positive integer, got 0``), before any work is done."""
import pytest
import torch

import ppgen
from ppgen.diagnostics import importance_diagnostics, to_inference_data
from ppgen.guides import DiagonalNormalGuide
from ppgen.infer.arguments import positive_int
from ppgen.models import VAE


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    x = (torch.rand(8, 6) < 0.5).float()
    return VAE(6, 2, likelihood="bernoulli", hidden=8), DiagonalNormalGuide(6, 2, hidden=8), x


@pytest.mark.parametrize("value", [0, -3, 2.5, "5", True, None, float("nan")])
def test_positive_int_names_the_argument(value):
    with pytest.raises(ValueError, match=f"^k must be a positive integer, got {value!r}$".replace("(", r"\(")
                       .replace(")", r"\)")):
        positive_int(value, "k")


def test_positive_int_takes_whole_numbers():
    assert positive_int(1e3, "k") == 1000 and type(positive_int(1e3, "k")) is int
    assert positive_int(None, "k", optional=True) is None


@pytest.mark.parametrize("kwargs, message", [
    (dict(k=0), "k must be a positive integer, got 0"),
    (dict(k=2.5), "k must be a positive integer, got 2.5"),
    (dict(elbo_samples=-1), "elbo_samples must be a positive integer, got -1"),
])
def test_evaluate_names_its_arguments(pair, kwargs, message):
    model, guide, x = pair
    with pytest.raises(ValueError, match=message):
        ppgen.evaluate(model, guide, x, **kwargs)


def test_evaluate_still_evaluates(pair):
    model, guide, x = pair
    assert set(ppgen.evaluate(model, guide, x, k=5, elbo_samples=2)) >= {"test_elbo_nats", "test_iwae_nats"}


@pytest.mark.parametrize("call, message", [
    (lambda m, g, x: importance_diagnostics(m, g, x, num_samples=0), "num_samples must be a positive integer, got 0"),
    (lambda m, g, x: importance_diagnostics(m, g, x, 10, batch_size=0), "batch_size must be a positive integer"),
    (lambda m, g, x: to_inference_data(m, g, x, num_samples=-2), "num_samples must be a positive integer, got -2"),
    (lambda m, g, x: to_inference_data(m, g, x, num_samples=1.5), "num_samples must be a positive integer, got 1.5"),
    (lambda m, g, x: ppgen.report(m, g, x, num_samples=0), "num_samples must be a positive integer"),
    (lambda m, g, x: ppgen.report(m, g, x, importance_samples=0), "importance_samples must be a positive integer"),
    (lambda m, g, x: ppgen.report(m, g, x, max_obs=0), "max_obs must be a positive integer"),
])
def test_diagnostics_and_report_name_their_arguments(pair, call, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=message):
        call(*pair)
    assert not list(tmp_path.iterdir())  # refused before anything is written


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(epochs=0), ValueError, "epochs must be a positive integer, got 0"),
    (dict(batch_size=2.5), ValueError, "batch_size must be a positive integer, got 2.5"),
    (dict(epochs="3"), ValueError, "epochs must be a positive integer, got '3'"),
    (dict(patience=-1), ValueError, "patience must be a non-negative integer .or None., got -1"),
    (dict(lr=0.0), ValueError, "lr must be a finite number > 0, got 0.0"),
    (dict(lr=float("nan")), ValueError, "lr must be a finite number > 0, got nan"),
    (dict(beta=-1), ValueError, "beta must be a finite number >= 0, got -1"),
    (dict(clip_norm=0), ValueError, "clip_norm must be a finite number > 0 .or None., got 0"),
    (dict(seed=-1), ValueError, "seed must be a non-negative integer, got -1"),
    (dict(epoch=3), TypeError, r"fit\(\) got unexpected keyword argument\(s\) 'epoch'; known: .* epochs,"),
])
def test_fit_names_its_settings(pair, kwargs, error, message):
    model, guide, x = pair
    with pytest.raises(error, match=message):
        ppgen.fit(model, guide, x, progress=False, device="cpu", **kwargs)


def test_fit_takes_whole_numbers_written_as_floats(pair):
    model, guide, x = pair
    history = ppgen.fit(model, guide, x, epochs=1e0, batch_size=4.0, progress=False, device="cpu")
    assert len(history.epoch) == 1
