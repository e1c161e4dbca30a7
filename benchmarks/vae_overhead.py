"""Per-step cost of ppgen's SVI step against a hand-written PyTorch VAE loss on the same networks.

All variants share ONE set of modules (the default ppgen VAE's decoder, the diagonal-Normal
guide's encoder and head: digits, 17-level categorical likelihood, z 16, MLP 256) and differ
only in how the loss is formed and which Adam runs:

* ``ppgen``       -- exactly what ``ppgen.infer.fit`` does per step:
                     ``objective(with_beta(model, beta), with_beta(guide, beta), x) / B``,
                     zero_grad, backward, step of fit's optimiser (``make_optimizer``), under
                     ``pyro.validation_enabled(False)``.
* ``handwritten`` -- the same single-sample Monte Carlo ELBO, log p(x|z) + log p(z) - log q(z|x),
                     written out in PyTorch, with the same optimiser. Checked to give the same
                     value as ``ppgen`` under the same random draws.
* ``pyro_trace_elbo`` -- ``pyro.infer.Trace_ELBO`` on the ppgen model and guide (isolates
                     what ppgen's own ELBO saves over Pyro's trace/replay machinery).
* ``before`` / ``handwritten_plain_adam`` -- what ppgen's step was before this benchmark's
                     changes, rebuilt from the same modules: Pyro's Trace_ELBO on a model and
                     guide built from stock distributions (``dist.Categorical(logits)``,
                     ``dist.Normal``), plain (unfused) Adam; and the hand-written loss with that
                     Adam. ``ratio_before`` = before / handwritten_plain_adam.

Timing: torch.set_num_threads(1) by default (the machine is shared; one thread is the stable
setting); variants are interleaved round by round in one process, in a rotating order, and
the median over rounds of the mean step time is reported, so background load hits all alike.
Prints one JSON line.

    python benchmarks/vae_overhead.py [--batch-size 128] [--rounds 40] [--steps 25] [--beta 1]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F

from ppgen.data import load
from ppgen.guides import DiagonalNormalGuide
from ppgen.models import VAE
from ppgen.infer.objectives import TraceELBO, with_beta

try:
    from ppgen.infer import make_optimizer
except ImportError:  # a ppgen from before make_optimizer: fit used plain Adam
    def make_optimizer(params, lr):
        return torch.optim.Adam(params, lr=lr)

LEVELS, Z_DIM, HIDDEN = 17, 16, 256


def build():
    data = load("digits")
    model = VAE(data.x_dim, Z_DIM, likelihood="categorical", likelihood_kwargs={"levels": LEVELS}, hidden=HIDDEN)
    guide = DiagonalNormalGuide.for_model(model, hidden=HIDDEN)
    return data.train, model, guide


def handwritten_loss(model, guide, x):
    """-ELBO / B with one reparameterised draw: the loss a PyTorch user writes by hand."""
    loc, raw_scale = guide.head(guide.encoder(x)).chunk(2, dim=-1)
    scale = F.softplus(raw_scale) + 1e-4
    eps = torch.randn_like(loc)
    z = loc + scale * eps
    logits = model.decoder(z).reshape(x.shape[0], -1, LEVELS)
    log_px = logits.log_softmax(-1).gather(-1, x.long().unsqueeze(-1)).sum((-2, -1))
    half_log_2pi = 0.5 * math.log(2 * math.pi)
    log_pz = (-0.5 * z**2 - half_log_2pi).sum(-1)
    log_qz = (-0.5 * eps**2 - scale.log() - half_log_2pi).sum(-1)
    return -(log_px + log_pz - log_qz).sum() / x.shape[0]


def stock_pair(model, guide):
    """The ppgen VAE and guide as they were written before (stock Pyro/torch distributions),
    on the same modules."""
    zeros = torch.zeros(Z_DIM)

    def stock_model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(zeros, zeros + 1.0).to_event(1))
            logits = model.decoder(z).reshape(*z.shape[:-1], -1, LEVELS)
            pyro.sample("x", dist.Categorical(logits=logits).to_event(1), obs=x)

    def stock_guide(x):
        loc, raw_scale = guide.head(guide.encoder(x)).chunk(2, dim=-1)
        q = dist.Normal(loc, F.softplus(raw_scale) + 1e-4).to_event(1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", q)

    return stock_model, stock_guide


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--steps", type=int, default=25, help="steps per variant per round")
    p.add_argument("--beta", type=float, default=1.0, help="KL weight passed through with_beta (fit's default 1)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    train, model, guide = build()
    stock_model, stock_guide = stock_pair(model, guide)
    params = list(model.parameters()) + list(guide.parameters())
    fit_adam = make_optimizer(params, lr=1e-3)  # the optimiser fit() builds
    plain_adam = torch.optim.Adam(params, lr=1e-3)  # the one it built before
    ppgen_elbo, pyro_elbo = TraceELBO(), pyro.infer.Trace_ELBO(max_plate_nesting=1)
    g = torch.Generator().manual_seed(0)
    batches = [train[torch.randperm(train.shape[0], generator=g)[:args.batch_size]] for _ in range(64)]
    b = args.beta

    variants = {  # name: (loss, optimiser)
        "ppgen": (lambda x: ppgen_elbo(with_beta(model, b), with_beta(guide, b), x) / x.shape[0], fit_adam),
        "handwritten": (lambda x: handwritten_loss(model, guide, x), fit_adam),
        "pyro_trace_elbo": (lambda x: pyro_elbo.differentiable_loss(with_beta(model, b), with_beta(guide, b), x)
                            / x.shape[0], fit_adam),
        "before": (lambda x: pyro_elbo.differentiable_loss(with_beta(stock_model, b), with_beta(stock_guide, b), x)
                   / x.shape[0], plain_adam),
        "handwritten_plain_adam": (lambda x: handwritten_loss(model, guide, x), plain_adam),
    }

    def step(name, x):
        loss_fn, optimizer = variants[name]
        loss = loss_fn(x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    with pyro.validation_enabled(False):
        if b == 1.0:  # the same draws give the same -ELBO: the comparison is like for like
            values = {}
            with torch.no_grad():
                for name, (loss_fn, _) in variants.items():
                    torch.manual_seed(1)
                    values[name] = loss_fn(batches[0]).item()
            for name, v in values.items():
                assert abs(v - values["handwritten"]) < 1e-4 * abs(v), f"{name}: {v} vs handwritten {values['handwritten']}"

        names = list(variants)
        for name in names:  # warm-up
            for i in range(20):
                step(name, batches[i % len(batches)])
        times = {name: [] for name in names}
        k = 0
        for r in range(args.rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    step(name, batches[k % len(batches)])
                    k += 1
                times[name].append((time.perf_counter() - t0) / args.steps)

    ms = {name: 1e3 * statistics.median(t) for name, t in times.items()}
    result = {
        "benchmark": "vae_overhead",
        "batch_size": args.batch_size,
        "beta": b,
        "ppgen_ms": round(ms["ppgen"], 3),
        "handwritten_ms": round(ms["handwritten"], 3),
        "ratio": round(ms["ppgen"] / ms["handwritten"], 3),
        "pyro_trace_elbo_ms": round(ms["pyro_trace_elbo"], 3),
        "ratio_pyro_trace_elbo": round(ms["pyro_trace_elbo"] / ms["handwritten"], 3),
        "before_ms": round(ms["before"], 3),
        "handwritten_plain_adam_ms": round(ms["handwritten_plain_adam"], 3),
        "ratio_before": round(ms["before"] / ms["handwritten_plain_adam"], 3),
        "rounds": args.rounds,
        "steps_per_round": args.steps,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} cpu",
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
