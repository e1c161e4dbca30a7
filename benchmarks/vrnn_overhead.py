"""Cost of the Pyro formulation: one ppgen VRNN SVI step vs a hand-written PyTorch VRNN loss.

Both share the very same modules (the model's phi_x, phi_z, prior, decoder, rnn and the
filtering guide's head) and compute the same single-sample ELBO estimator
log p(x, z) - log q(z | x) with reparameterized z; each step is loss -> backward -> Adam.
The ppgen step is fit()'s inner step: ``ppgen.infer.objectives.TraceELBO`` on the Pyro model and
guide, Pyro validation off. Steps of the two are interleaved in rounds, so drifting machine
load hits both alike; medians are reported. Prints one JSON line.

    python benchmarks/vrnn_overhead.py [--steps 40] [--data ../shared/data/polyphonic/JSB_Chorales.mat]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import pyro
import torch
import torch.distributions as td

from ppgen.guides.vrnn import FilteringGuide
from ppgen.models.vrnn import VRNN
from ppgen.nn.mlp import gaussian_params
from ppgen.infer.objectives import TraceELBO, with_beta

ROOT = Path(__file__).resolve().parents[1]


def hand_loss(model: VRNN, guide: FilteringGuide, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """-ELBO / B of the VRNN written directly in PyTorch with the same modules (GRU cell)."""
    B, T, _ = x.shape
    fx = model.phi_x(x)
    h = model.rnn.init[0].expand(B, -1)
    hs, zs, fzs, locs, scales = [], [], [], [], []
    for t in range(T):
        loc, scale = gaussian_params(guide.head(torch.cat([fx[:, t], h], -1)))
        z = loc + scale * torch.randn_like(loc)
        fz = model.phi_z(z)
        hs.append(h), zs.append(z), fzs.append(fz), locs.append(loc), scales.append(scale)
        h = model.rnn.cell(torch.cat([fx[:, t], fz], -1), h)
    h_prev, z, fz = torch.stack(hs, 1), torch.stack(zs, 1), torch.stack(fzs, 1)
    prior_loc, prior_scale = model.prior(h_prev)
    logits = model.decoder(torch.cat([fz, h_prev], -1))
    log_px = td.Bernoulli(logits=logits).log_prob(x).sum(-1)
    log_pz = td.Normal(prior_loc, prior_scale).log_prob(z).sum(-1)
    log_qz = td.Normal(torch.stack(locs, 1), torch.stack(scales, 1)).log_prob(z).sum(-1)
    return -((log_px + log_pz - log_qz) * mask).sum() / B


def ppgen_loss(model, guide, x, mask, beta: float = 1.0) -> torch.Tensor:
    return TraceELBO()(with_beta(model, beta), with_beta(guide, beta), x, mask) / x.shape[0]


PYRO_TRACE_ELBO = pyro.infer.Trace_ELBO(max_plate_nesting=1)


def pyro_loss(model, guide, x, mask) -> torch.Tensor:
    """The same model and guide under Pyro's own Trace_ELBO (for reference)."""
    return PYRO_TRACE_ELBO.differentiable_loss(model, guide, x, mask) / x.shape[0]


def timed_steps(loss_fn, optimizer, n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        loss = loss_fn()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - t0)
    return times


def jsb_epoch_seconds(path: Path, batch_size: int, z_dim: int, hidden: int, epochs: int = 2) -> dict:
    from ppgen.data import load
    from ppgen.infer import fit

    data = load(f"jsb:{path}")
    model = VRNN.for_data(data, z_dim=z_dim, hidden=hidden)
    guide = FilteringGuide.for_model(model)
    hist = fit(model, guide, data, epochs=epochs, batch_size=batch_size, lr=1e-3, progress=False)
    return {"jsb_epoch_seconds": statistics.mean(hist.seconds), "jsb_epoch_includes": "train steps + validation ELBO"}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--keys", type=int, default=88)
    parser.add_argument("--z-dim", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--steps", type=int, default=40, help="timed steps of each kind")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/polyphonic/JSB_Chorales.mat"))
    parser.add_argument("--jsb-epochs", type=int, default=2, help="0 skips the JSB epoch timing")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    pyro.set_rng_seed(0)

    model = VRNN(args.keys, args.z_dim, args.hidden)
    guide = FilteringGuide.for_model(model)
    x = (torch.rand(args.batch, args.length, args.keys) < 0.05).float()
    mask = torch.ones(args.batch, args.length, dtype=torch.bool)
    optimizer = torch.optim.Adam([*model.parameters(), *guide.parameters()], lr=1e-4)
    kinds = {
        "ppgen": lambda: ppgen_loss(model, guide, x, mask),
        "hand": lambda: hand_loss(model, guide, x, mask),
        "ppgen_annealed": lambda: ppgen_loss(model, guide, x, mask, beta=0.5),
        "pyro_trace_elbo": lambda: pyro_loss(model, guide, x, mask),
    }
    times = {k: [] for k in kinds}
    with pyro.validation_enabled(False):
        for fn in kinds.values():
            timed_steps(fn, optimizer, 5)  # warm-up
        per_round = max(1, args.steps // args.rounds)
        for _ in range(args.rounds):
            for k, fn in kinds.items():
                times[k] += timed_steps(fn, optimizer, per_round)
    ms = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    result = {
        "benchmark": "vrnn_overhead",
        "ppgen_step_ms": round(ms["ppgen"], 2),
        "hand_step_ms": round(ms["hand"], 2),
        "ratio": round(ms["ppgen"] / ms["hand"], 3),
        "ppgen_annealed_step_ms": round(ms["ppgen_annealed"], 2),
        "pyro_trace_elbo_step_ms": round(ms["pyro_trace_elbo"], 2),
        "pyro_trace_elbo_ratio": round(ms["pyro_trace_elbo"] / ms["hand"], 3),
        "batch": args.batch, "length": args.length, "keys": args.keys, "z_dim": args.z_dim, "hidden": args.hidden,
        "steps_each": len(times["ppgen"]), "threads": args.threads,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "torch": torch.__version__, "pyro": pyro.__version__,
    }
    if args.jsb_epochs and Path(args.data).is_file():
        result.update(jsb_epoch_seconds(Path(args.data), args.batch, args.z_dim, args.hidden, args.jsb_epochs))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
