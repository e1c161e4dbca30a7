"""What each speed-up on a private torch/Pyro internal (ppgen.distributions.fast) saves, side by side.

Two SVI steps as fit() takes them (ppgen's TraceELBO / B, backward, fit's Adam, validation off):

* the digits VAE (the default model and diagonal-Normal guide of benchmarks/vae_overhead.py:
  17-level categorical likelihood, z 16, MLP 256, batch 128), with each of its speed-ups
  turned off in turn: ``unit_normal_prior`` (the N(0, I) prior's shorter log_prob, its
  distribution cached per device and validation setting), ``reparam_normal`` (the guide's
  log_prob of its own draw) and ``log_softmax_categorical`` (the likelihood);
* the VRNN of benchmarks/vrnn_overhead.py (batch 20, 64 frames, 88 keys, filtering guide),
  with ``state_reuse`` (the model reusing the guide's h_t, guarded by ``Tensor._version``)
  off, and ``subsample_type_check`` *on* (the private ``_Subsample`` type test that the lean
  ELBO used before Pyro's public ``site_is_subsample``, which it uses now).

"Off" swaps in the plain version (``dist.Normal``, ``dist.Categorical(logits=...)``, no
reuse) for that one piece. ``alone`` times the two distribution speed-ups by themselves
(forward and backward at the VAE's shapes), where a shared machine's noise hides less. Variants run in one process, interleaved round by round
in a rotating order; each reports the median over rounds of the mean step time, and
``saving_pct`` = (off - on) / off. Prints one JSON line.

    python benchmarks/fast_paths.py [--rounds 60] [--steps 20] [--vrnn-rounds 4] [--vrnn-steps 8]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import time
from unittest import mock

import pyro
import pyro.distributions as dist
import torch
from pyro.poutine.subsample_messenger import _Subsample

import ppgen.guides.amortized as amortized
import ppgen.infer.record as record
import ppgen.likelihoods as likelihoods
import ppgen.priors.vector as vector
from ppgen.data import load
from ppgen.distributions.fast import LogSoftmaxCategorical, ReparamNormal
from ppgen.guides import DiagonalNormalGuide, FilteringGuide
from ppgen.infer import make_optimizer
from ppgen.infer.objectives import TraceELBO, with_beta
from ppgen.models import VAE, VRNN
from ppgen.models.recurrence import GuideStates


def _plain_categorical(logits):
    return dist.Categorical(logits=logits)


def _no_reuse(self, x, mask, params):
    self._offer = None
    return None


def _private_sample_sites(rec):
    return [(name, msg) for name, msg in rec.sites.items() if type(msg["fn"]) is not _Subsample]


def _plain_standard_normal(self):
    zeros = self._zeros()
    return dist.Normal(zeros, zeros + 1.0).to_event(1)


OFF = {  # speed-up: the patch that replaces it by the plain version
    "unit_normal_prior": lambda: mock.patch.object(vector.StandardNormal, "forward", _plain_standard_normal),
    "reparam_normal": lambda: mock.patch.object(amortized, "ReparamNormal", dist.Normal),
    "log_softmax_categorical": lambda: mock.patch.object(likelihoods, "LogSoftmaxCategorical", _plain_categorical),
    "state_reuse": lambda: mock.patch.object(GuideStates, "take", _no_reuse),
    "subsample_type_check": lambda: mock.patch.object(record, "sample_sites", _private_sample_sites),
}


def timed(variants: dict, step, rounds: int, steps: int) -> dict:
    """Median over rounds of the mean time (ms) of ``step()`` under each variant (a context
    manager factory), or of the variant's own step where ``step`` is None and the variants
    are ``(context, step)`` pairs."""
    names = list(variants)
    times = {n: [] for n in names}
    for r in range(-1, rounds):  # round -1 warms up
        for name in names[r % len(names):] + names[:r % len(names)]:
            ctx, fn = variants[name] if step is None else (variants[name], step)
            with ctx():
                t0 = time.perf_counter()
                for _ in range(steps):
                    fn()
                if r >= 0:
                    times[name].append((time.perf_counter() - t0) / steps)
    return {n: 1e3 * statistics.median(t) for n, t in times.items()}


def alone(rounds: int, steps: int) -> dict:
    """Each distribution speed-up by itself at the digits VAE's shapes (batch 128): the guide's
    draw and log_prob of it (z 16), the likelihood's log_prob (64 pixels x 17 levels), forward
    and backward, against the plain version."""
    g = torch.Generator().manual_seed(0)
    loc, raw = torch.randn(128, 16, generator=g, requires_grad=True), torch.randn(128, 16, generator=g)
    scale = (raw.exp() + 1e-4).requires_grad_()
    logits = torch.randn(128, 64, 17, generator=g, requires_grad=True)
    x = torch.randint(0, 17, (128, 64), generator=g)

    def normal(cls):
        def step():
            d = cls(loc, scale)
            d.log_prob(d.rsample()).sum().backward()
        return contextlib.nullcontext, step

    def categorical(make):
        return contextlib.nullcontext, lambda: make(logits).log_prob(x).sum().backward()

    ms = timed({"reparam_normal_on": normal(ReparamNormal), "reparam_normal_off": normal(dist.Normal),
                "log_softmax_categorical_on": categorical(LogSoftmaxCategorical),
                "log_softmax_categorical_off": categorical(_plain_categorical)}, None, rounds, steps)
    out = {}
    for name in ("reparam_normal", "log_softmax_categorical"):
        on, off = ms[f"{name}_on"], ms[f"{name}_off"]
        out[name] = {"on_ms": round(on, 4), "off_ms": round(off, 4), "saving_ms": round(off - on, 4)}
    return out


def report(ms: dict, on: str, flipped: tuple = ()) -> dict:
    """``{speed-up: {on_ms, off_ms, saving_pct}}``; ``flipped`` names variants that turn a speed-up on."""
    out = {"all_on_ms": round(ms[on], 3)}
    for name, t in ms.items():
        if name == on:
            continue
        on_ms, off_ms = (t, ms[on]) if name in flipped else (ms[on], t)
        out[name] = {"on_ms": round(on_ms, 3), "off_ms": round(off_ms, 3),
                     "saving_pct": round(100 * (off_ms - on_ms) / off_ms, 1)}
    return out


def sgd_step(loss_fn, optimizer):
    def step():
        loss = loss_fn()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def vae_step():
    data = load("digits")
    model = VAE(data.x_dim, 16, likelihood="categorical", likelihood_kwargs={"levels": 17}, hidden=256)
    guide = DiagonalNormalGuide.for_model(model, hidden=256)
    g = torch.Generator().manual_seed(0)
    batches = [data.train[torch.randperm(data.train.shape[0], generator=g)[:128]] for _ in range(16)]
    elbo, it = TraceELBO(), iter(range(10**9))
    optimizer = make_optimizer([*model.parameters(), *guide.parameters()], lr=1e-3)  # fit's

    def loss():
        x = batches[next(it) % len(batches)]
        return elbo(with_beta(model, 1.0), with_beta(guide, 1.0), x) / x.shape[0]

    def values():  # the same draws give the same loss with every speed-up on or off
        out = {}
        for name, off in {"on": contextlib.nullcontext, **{k: OFF[k] for k in VAE_SPEEDUPS}}.items():
            with off(), torch.no_grad():
                torch.manual_seed(1)
                out[name] = elbo(model, guide, batches[0]).item()
        return out

    return sgd_step(loss, optimizer), values


def vrnn_step():
    model = VRNN(88, 16, 128)
    guide = FilteringGuide.for_model(model)
    x = (torch.rand(20, 64, 88) < 0.05).float()
    mask = torch.ones(20, 64, dtype=torch.bool)
    elbo = TraceELBO()
    optimizer = make_optimizer([*model.parameters(), *guide.parameters()], lr=1e-4)
    return sgd_step(lambda: elbo(with_beta(model, 1.0), with_beta(guide, 1.0), x, mask) / x.shape[0], optimizer)


VAE_SPEEDUPS = ("unit_normal_prior", "reparam_normal", "log_softmax_categorical")


@contextlib.contextmanager
def all_off(names):
    with contextlib.ExitStack() as stack:
        for n in names:
            stack.enter_context(OFF[n]())
        yield


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=60)
    p.add_argument("--steps", type=int, default=20, help="VAE steps per variant per round")
    p.add_argument("--vrnn-rounds", type=int, default=4)
    p.add_argument("--vrnn-steps", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    pyro.set_rng_seed(0)

    with pyro.validation_enabled(False):
        step, values = vae_step()
        v = values()
        assert all(abs(x - v["on"]) < 1e-4 * abs(v["on"]) for x in v.values()), v

        variants = {"all_on": contextlib.nullcontext, **{k: OFF[k] for k in VAE_SPEEDUPS},
                    "all_off": lambda: all_off(VAE_SPEEDUPS)}
        vae_ms = timed(variants, step, args.rounds, args.steps)
        parts = alone(args.rounds, 10 * args.steps)

        vrnn = vrnn_step()
        vrnn_ms = timed({"all_on": contextlib.nullcontext, "state_reuse": OFF["state_reuse"],
                         "subsample_type_check": OFF["subsample_type_check"]}, vrnn, args.vrnn_rounds, args.vrnn_steps)

    result = {
        "benchmark": "fast_paths",
        "vae": report(vae_ms, "all_on"),
        "alone": parts,
        "vrnn": report(vrnn_ms, "all_on", flipped=("subsample_type_check",)),
        "vae_rounds": args.rounds, "vae_steps_per_round": args.steps,
        "vrnn_rounds": args.vrnn_rounds, "vrnn_steps_per_round": args.vrnn_steps,
        "threads": torch.get_num_threads(), "torch": torch.__version__, "pyro": pyro.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} cpu",
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
