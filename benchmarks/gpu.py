"""Steps per second of ppgen's VAE training step on a GPU, fp32 and bf16, against a hand-written
PyTorch loss on the same networks and the same batches.

All variants share ONE set of modules (the ppgen VAE's MLP decoder, the diagonal-Normal
guide's encoder and head: digits, 17-level categorical likelihood, z 16, MLP ``--hidden``) on
the GPU, and one optimiser (fit's, ``make_optimizer``: fused Adam on CUDA). Each step is what
the training loop does with one minibatch:

* ``ppgen``       -- ``objective(with_beta(model, beta), with_beta(guide, beta), x) / B`` under
                     ``ppgen.infer.precision.autocast(device, precision)`` (a no-op for fp32),
                     then the loop's ``apply_update`` (reads the loss once, checks it is
                     finite, zero_grad, backward and step outside autocast).
* ``handwritten`` -- the same single-sample Monte Carlo ELBO, log p(x|z) + log p(z) - log q(z|x),
                     written out in PyTorch (densities in float32, as ppgen keeps them), under
                     plain ``torch.autocast`` for bf16, then the same read of the loss, check,
                     backward and step: like for like, one host-device sync per step on both sides.

Checked before timing: under the same random draws both give the same fp32 loss. Timing:
variants interleaved round by round in one process in a rotating order, ``torch.cuda.synchronize``
around each round, the median over rounds of the mean step time reported. Prints one JSON line.
Needs a CUDA device and exits with a message saying so when there is none (``--device cpu``
runs the same code on the CPU, only as a smoke test of the script; its numbers are not the
benchmark).

    python benchmarks/gpu.py [--batch-size 1024] [--hidden 512] [--rounds 30] [--steps 50]
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time

import pyro
import torch
import torch.nn.functional as F

from ppgen.data import load
from ppgen.guides import DiagonalNormalGuide
from ppgen.infer import make_optimizer
from ppgen.infer.loop import apply_update
from ppgen.infer.objectives import TraceELBO, with_beta
from ppgen.infer.precision import autocast, check_precision
from ppgen.models import VAE

LEVELS, Z_DIM = 17, 16


def build(hidden: int, device: torch.device):
    data = load("digits")
    model = VAE(data.x_dim, Z_DIM, likelihood="categorical", likelihood_kwargs={"levels": LEVELS}, hidden=hidden)
    guide = DiagonalNormalGuide.for_model(model, hidden=hidden)
    return data.train.to(device), model.to(device), guide.to(device)


def handwritten_loss(model, guide, x):
    """-ELBO / B with one reparameterised draw, networks in whatever autocast says, densities in
    float32: the loss a PyTorch user writes by hand."""
    loc, raw_scale = guide.head(guide.encoder(x)).float().chunk(2, dim=-1)
    scale = F.softplus(raw_scale) + 1e-4
    eps = torch.randn_like(loc)
    z = loc + scale * eps
    logits = model.decoder(z).float().reshape(x.shape[0], -1, LEVELS)
    log_px = logits.log_softmax(-1).gather(-1, x.long().unsqueeze(-1)).sum((-2, -1))
    half_log_2pi = 0.5 * math.log(2 * math.pi)
    log_pz = (-0.5 * z**2 - half_log_2pi).sum(-1)
    log_qz = (-0.5 * eps**2 - scale.log() - half_log_2pi).sum(-1)
    return -(log_px + log_pz - log_qz).sum() / x.shape[0]


def handwritten_update(loss, optimizer) -> float:
    value = loss.item()  # the logged loss, as ppgen's apply_update reads it
    if not math.isfinite(value):
        raise FloatingPointError(f"non-finite loss {value}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return value


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--steps", type=int, default=50, help="steps per variant per round")
    p.add_argument("--device", default="cuda", help="cuda (the benchmark) or cpu (a smoke test of the script)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit(f"benchmarks/gpu.py needs a CUDA device, and this machine has none (torch {torch.__version__}, "
                 f"CUDA build {torch.version.cuda or 'none'}); run it on a GPU machine")
    precisions = ["fp32", "bf16"]
    for precision in precisions:
        check_precision(precision, device)  # a GPU without bfloat16 is named here, before any timing
    torch.manual_seed(0)
    train, model, guide = build(args.hidden, device)
    optimizer = make_optimizer(list(model.parameters()) + list(guide.parameters()), lr=1e-4)
    elbo = TraceELBO()
    g = torch.Generator().manual_seed(0)
    batches = [train[torch.randint(train.shape[0], (args.batch_size,), generator=g).to(device)] for _ in range(16)]

    def ppgen_step(precision, x):
        with autocast(device, precision):
            loss = elbo(with_beta(model, 1.0), with_beta(guide, 1.0), x) / x.shape[0]
        return apply_update(loss, optimizer)

    def handwritten_step(precision, x):
        with autocast(device, precision):  # plain torch.autocast for bf16, nothing for fp32
            loss = handwritten_loss(model, guide, x)
        return handwritten_update(loss, optimizer)

    variants = {f"{kind}_{precision}": (step, precision) for precision in precisions
                for kind, step in (("ppgen", ppgen_step), ("handwritten", handwritten_step))}

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    with pyro.validation_enabled(False):
        values = {}
        with torch.no_grad():  # the same draws give the same fp32 -ELBO: a like-for-like comparison
            for kind, loss_fn in (("ppgen", lambda x: elbo(model, guide, x) / x.shape[0]),
                                  ("handwritten", lambda x: handwritten_loss(model, guide, x))):
                torch.manual_seed(1)
                values[kind] = loss_fn(batches[0]).item()
        assert abs(values["ppgen"] - values["handwritten"]) < 1e-4 * abs(values["handwritten"]), values

        names = list(variants)
        for name in names:  # warm-up (kernel selection, fused Adam's first steps)
            step, precision = variants[name]
            for i in range(20):
                step(precision, batches[i % len(batches)])
        times = {name: [] for name in names}
        k = 0
        for r in range(args.rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                step, precision = variants[name]
                sync()
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    step(precision, batches[k % len(batches)])
                    k += 1
                sync()
                times[name].append((time.perf_counter() - t0) / args.steps)

    per_s = {name: 1.0 / statistics.median(t) for name, t in times.items()}
    result = {"benchmark": "gpu", "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "batch_size": args.batch_size, "hidden": args.hidden}
    for precision in precisions:
        ppgen, hand = per_s[f"ppgen_{precision}"], per_s[f"handwritten_{precision}"]
        result[f"ppgen_{precision}_steps_per_s"] = round(ppgen, 1)
        result[f"handwritten_{precision}_steps_per_s"] = round(hand, 1)
        result[f"ratio_{precision}"] = round(hand / ppgen, 3)  # ppgen's step time over the hand-written one
    result["bf16_speedup_ppgen"] = round(per_s["ppgen_bf16"] / per_s["ppgen_fp32"], 3)
    result.update(rounds=args.rounds, steps_per_round=args.steps, torch=torch.__version__, pyro=pyro.__version__,
                  cuda=torch.version.cuda, machine=platform.machine())
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
