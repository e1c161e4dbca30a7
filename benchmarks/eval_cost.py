"""Cost of ppgen's importance-sampled log-likelihood (IWAE, K draws) against a hand-written
importance sampler on the same networks, for the digits VAE and the JSB VRNN test splits.

* ``vae``  -- the default ``ppgen train vae`` pair on digits (17-level categorical likelihood,
  z 16, MLP 256, diagonal-Normal guide; untrained: the cost does not depend on the weights).
  ppgen: ``ppgen.evaluate.iwae_log_likelihood(model, guide, test, k)``. Hand-written: the
  encoder once per pass, K reparameterised draws, log p(x|z) + log p(z) - log q(z|x) in plain
  torch (log_softmax + gather, closed-form Normal densities), logsumexp - log K.
* ``vrnn`` -- the default ``ppgen train vrnn`` pair on JSB Chorales (GRU, hidden 128, z 16,
  learned prior, Bernoulli emission, smoothing guide; untrained). ppgen:
  ``ppgen.evaluate.sequences.iwae_per_sequence(model, guide, test, k)``. Hand-written: phi_x and
  the guide's backward GRU once per pass, then the filtering recursion over the K draws of all
  sequences of the pass at once (z_t ~ q, h_t = GRU), the prior and the emission batched over
  steps, in plain torch.

Both sides take the same passes (the same datapoints and draws per pass: ppgen's
``draw_plan`` and, for sequences, ``length_groups``, for the same budget in bytes; the
hand-written side gets the plan precomputed, ppgen measures its draws' memory inside the timed
call), so the ratio is the cost of ppgen's Pyro formulation
and its bookkeeping, not of a different batching. The two estimates use independent draws
and must agree within Monte Carlo error (the script checks |difference| < 4 standard errors,
from the per-datapoint delta-method errors of the two estimates). Variants alternate round by
round in one process; medians over rounds. Prints one JSON line.

    python benchmarks/eval_cost.py [--k 1000] [--rounds 3] [--threads 1]
        [--jsb ../shared/data/polyphonic/JSB_Chorales.mat]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path

import pyro
import torch
import torch.nn.functional as F

from ppgen.data import load
from ppgen.evaluate import DRAW_BUDGET, draw_bytes, draw_plan, heldout_log_weights
from ppgen.evaluate.sequences import frame_bytes, iwae_per_sequence, length_groups
from ppgen.guides import DiagonalNormalGuide
from ppgen.guides.vrnn import SmoothingGuide, reverse_padded
from ppgen.models import VAE
from ppgen.models.vrnn import VRNN
from ppgen.nn import eval_mode

ROOT = Path(__file__).resolve().parents[1]
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def normal_log_prob(z, loc, scale):
    return -0.5 * ((z - loc) / scale) ** 2 - scale.log() - HALF_LOG_2PI


# -- the digits VAE ----------------------------------------------------------------------------

def vae_pair():
    data = load("digits")
    model = VAE.for_data(data, 16, hidden=256)
    guide = DiagonalNormalGuide.for_model(model, hidden=256)
    return model, guide, data.test


def vae_log_weights(model, guide, x, draws):
    """log w [draws, B] of the VAE written out: one encoder pass, ``draws`` draws per datapoint."""
    loc, raw_scale = guide.head(guide.encoder(x)).chunk(2, dim=-1)
    scale = F.softplus(raw_scale) + 1e-4
    eps = torch.randn(draws, *loc.shape)
    z = loc + scale * eps
    logits = model.decoder(z).reshape(draws, x.shape[0], x.shape[1], -1).log_softmax(-1)
    log_px = logits.gather(-1, x.long().expand(draws, -1, -1).unsqueeze(-1)).sum((-2, -1))
    log_pz = (-0.5 * z ** 2 - HALF_LOG_2PI).sum(-1)
    log_qz = (-0.5 * eps ** 2 - scale.log() - HALF_LOG_2PI).sum(-1)
    return log_px + log_pz - log_qz


def vae_plan(model, guide, x, k, budget):
    """ppgen's passes (datapoints, draws) for this pair and data, measured once."""
    return draw_plan(x.shape[0], k, draw_bytes(model, guide, (x,)), budget)


@torch.no_grad()
def vae_handwritten(model, guide, x, k, plan):
    batch, chunk = plan
    out = torch.empty(k, x.shape[0])
    with eval_mode(model, guide):
        for i in range(0, x.shape[0], batch):
            for j in range(0, k, chunk):
                n = min(chunk, k - j)
                out[j:j + n, i:i + batch] = vae_log_weights(model, guide, x[i:i + batch], n)
    return out


# -- the JSB VRNN ------------------------------------------------------------------------------

def vrnn_pair(path):
    data = load(f"jsb:{path}")
    model = VRNN.for_data(data, z_dim=16, hidden=128, rnn="gru", prior="learned")
    guide = SmoothingGuide.for_model(model)
    return model, guide, data.test


def vrnn_log_weights(model, guide, x, mask, draws):
    """log w [draws, B] of the VRNN with the smoothing guide, written out in plain torch."""
    B, T, _ = x.shape
    H = model.hidden
    fx = model.phi_x(x)                                                  # [B, T, H]
    lengths = mask.sum(-1)
    back, _ = guide.backward_rnn(reverse_padded(fx, lengths))
    ctx = reverse_padded(back, lengths)                                  # [B, T, H]
    h = model.rnn.init[0].expand(draws * B, H)
    hs, zs, fzs, q_lp = [], [], [], []
    for t in range(T):
        inp = torch.cat([ctx[:, t].expand(draws, B, H).reshape(-1, H), h], -1)
        loc, raw_scale = guide.head(inp).chunk(2, dim=-1)
        scale = F.softplus(raw_scale) + 1e-4
        eps = torch.randn(draws, B, model.z_dim).reshape(-1, model.z_dim)
        z = loc + scale * eps
        fz = model.phi_z(z)
        hs.append(h), zs.append(z), fzs.append(fz)
        q_lp.append((-0.5 * eps ** 2 - scale.log() - HALF_LOG_2PI).sum(-1))
        h = model.rnn.cell(torch.cat([fx[:, t].expand(draws, B, H).reshape(-1, H), fz], -1), h)
    h_prev, z, fz = (torch.stack(v, 1) for v in (hs, zs, fzs))          # [draws*B, T, .]
    prior_loc, prior_scale = model.prior(h_prev)
    logits = model.decoder(torch.cat([fz, h_prev], -1))
    xs = x.expand(draws, -1, -1, -1).reshape(draws * B, T, -1)
    log_px = -F.binary_cross_entropy_with_logits(logits, xs, reduction="none").sum(-1)
    log_pz = normal_log_prob(z, prior_loc, prior_scale).sum(-1)
    log_w = (log_px + log_pz - torch.stack(q_lp, 1)) * mask.expand(draws, -1, -1).reshape(draws * B, T)
    return log_w.sum(-1).reshape(draws, B)


def vrnn_plan(model, guide, data, k, budget):
    """ppgen's passes for this pair and data, measured once: [(index, frames, datapoints, draws)]."""
    x, mask = data
    per_frame = frame_bytes(model, guide, x, mask)
    return [(index, frames, *draw_plan(len(index), k, per_frame * frames, budget))
            for index, frames in length_groups(mask, k, per_frame, budget)]


@torch.no_grad()
def vrnn_handwritten(model, guide, data, k, plan):
    """(log p(x_n) [N], its Monte Carlo standard error [N]) over the same passes as ppgen's."""
    x, mask = data
    out, se = torch.empty(x.shape[0]), torch.empty(x.shape[0])
    with eval_mode(model, guide):
        for index, frames, batch, chunk in plan:
            xg, mg = x[index, :frames], mask[index, :frames]
            for i in range(0, len(index), batch):
                log_w = torch.cat([vrnn_log_weights(model, guide, xg[i:i + batch], mg[i:i + batch], min(chunk, k - j))
                                   for j in range(0, k, chunk)])
                out[index[i:i + batch]], se[index[i:i + batch]] = (v.float() for v in log_mean_exp_se(log_w))
    return out, se


# -- Monte Carlo error -------------------------------------------------------------------------

def log_mean_exp_se(log_w):
    """Per datapoint: log mean_k w_k and its delta-method standard error sd(w)/(sqrt(K) mean(w))."""
    log_w = log_w.double()
    k = log_w.shape[0]
    w = (log_w - log_w.max(0).values).exp()
    return torch.logsumexp(log_w, 0) - math.log(k), w.std(0) / (math.sqrt(k) * w.mean(0))


# -- timing ------------------------------------------------------------------------------------

def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def compare(variants: dict, rounds: int) -> tuple[dict, dict]:
    """Median seconds per variant over ``rounds`` alternating rounds, and the last outputs."""
    times, outs = {name: [] for name in variants}, {}
    names = list(variants)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            seconds, outs[name] = timed(variants[name])
            times[name].append(seconds)
    return {name: statistics.median(t) for name, t in times.items()}, outs


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--k", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--budget", type=int, default=DRAW_BUDGET)
    p.add_argument("--jsb", default=str(ROOT.parent / "shared" / "data" / "polyphonic" / "JSB_Chorales.mat"))
    p.add_argument("--only", choices=("vae", "vrnn"), default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    k, budget = args.k, args.budget
    result = {"benchmark": "eval_cost", "k": k, "budget": budget}

    with pyro.validation_enabled(False):
        if args.only in (None, "vae"):
            model, guide, x = vae_pair()
            plan = vae_plan(model, guide, x, k, budget)
            result["vae_plan"] = {"datapoints": plan[0], "draws": plan[1]}
            secs, outs = compare({  # the log-weights [K, N]; logsumexp over K costs nothing beside them
                "ppgen": lambda: heldout_log_weights(model, guide, x, k, budget=budget),
                "handwritten": lambda: vae_handwritten(model, guide, x, k, plan)}, args.rounds)
            est = {name: log_mean_exp_se(log_w) for name, log_w in outs.items()}
            result["vae"] = summary(secs, est, x.shape[0], "nats per image")
        if args.only in (None, "vrnn"):
            model, guide, data = vrnn_pair(args.jsb)
            plan = vrnn_plan(model, guide, data, k, budget)
            result["vrnn_passes"] = sum(len(range(0, len(i), b)) * len(range(0, k, c)) for i, _, b, c in plan)
            secs, outs = compare({
                "ppgen": lambda: iwae_per_sequence(model, guide, data, k, budget=budget),
                "handwritten": lambda: vrnn_handwritten(model, guide, data, k, plan)}, args.rounds)
            # ppgen's estimator is the same (same proposal and K), so its per-sequence errors are
            # those measured on the hand-written weights
            se = outs["handwritten"][1]
            est = {"ppgen": (outs["ppgen"], se), "handwritten": outs["handwritten"]}
            result["vrnn"] = summary(secs, est, int(data[1].sum()), "nats per frame")
    result.update({"rounds": args.rounds, "threads": torch.get_num_threads(), "torch": torch.__version__,
                   "pyro": pyro.__version__, "machine": f"{platform.machine()}, {os.cpu_count()} cpu"})
    print(json.dumps(result))
    return result


def summary(secs, est, per, unit) -> dict:
    """Seconds, ratio and the two estimates (summed log p(x) / ``per``) with their difference
    and its Monte Carlo standard error (the two estimates' independent errors combined)."""
    out = {"ppgen_s": round(secs["ppgen"], 2), "handwritten_s": round(secs["handwritten"], 2),
           "ratio": round(secs["ppgen"] / secs["handwritten"], 3), "unit": unit}
    for name, (log_px, _) in est.items():
        out[f"{name}_estimate"] = round(float(log_px.sum()) / per, 4)
    diff = out["ppgen_estimate"] - out["handwritten_estimate"]
    out["difference"] = round(diff, 4)
    se = math.sqrt(sum(float(s.double().pow(2).sum()) for _, s in est.values())) / per
    out["difference_se"] = round(se, 4)
    out["within_mc_error"] = abs(diff) < 4 * se
    return out


if __name__ == "__main__":
    main()
