"""Held-out evaluation of sequence models in nats per frame, as in the polyphonic-music literature.

Sign convention: every number here is a log-density per real (unpadded) frame, higher is
better and negative for binary piano rolls. Papers report "-ELBO" / NLL per frame: the same
numbers with the sign flipped (Pyro's DMM example: test -ELBO 6.87 = ELBO -6.87 here).
"""
from __future__ import annotations

from typing import NamedTuple

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites

from .bounds import iwae_log_likelihood, test_elbo
from ..nn import eval_mode


class WeightedDraws(NamedTuple):
    """``log_w[k, b, t]`` = log p(x_t, z_t | past) - log q(z_t | ...) at step t of draw k (0 on
    padding), so ``log_w.sum(-1)`` is the whole-sequence importance weight; ``z`` lists the
    draws of z_t, ``[K, B, z_dim]`` each."""

    log_w: torch.Tensor
    z: list


@torch.no_grad()
def stepwise_log_weights(model, guide, x: torch.Tensor, mask: torch.Tensor, num_particles: int = 1) -> WeightedDraws:
    """Draw ``num_particles`` z_{1:T} ~ q(. | x) per sequence (vectorized, in a plate at dim -2),
    score them under the model, and split each site's log-density by its step (sites
    ``z_{t}``, ``x_{t}``)."""
    plate = pyro.plate("_particles", num_particles, dim=-2)
    with pyro.validation_enabled(False), eval_mode(model, guide):
        guide_trace = poutine.trace(plate(guide)).get_trace(x, mask)
        model_trace = poutine.trace(poutine.replay(plate(model), trace=guide_trace)).get_trace(x, mask)
    model_trace, guide_trace = prune_subsample_sites(model_trace), prune_subsample_sites(guide_trace)
    model_trace.compute_log_prob()
    guide_trace.compute_log_prob()
    T = sum(1 for n, s in guide_trace.nodes.items() if s["type"] == "sample")
    log_w = x.new_zeros(num_particles, x.shape[0], T)
    for trace, sign in ((model_trace, 1.0), (guide_trace, -1.0)):
        for name, site in trace.nodes.items():
            if site["type"] == "sample":
                log_w[..., _step(name)] += sign * site["log_prob"]
    z = [guide_trace.nodes[f"z_{t}"]["value"].expand(num_particles, x.shape[0], -1) for t in range(T)]
    return WeightedDraws(log_w, z)


def _step(name: str) -> int:
    prefix, _, t = name.rpartition("_")
    if prefix not in ("z", "x") or not t.isdigit():
        raise ValueError(f"expected sequence sites named z_{{t}} and x_{{t}}, found {name!r}")
    return int(t)


def real_frames(mask: torch.Tensor) -> int:
    return int(mask.sum())


def elbo_per_frame(model, guide, data, num_samples: int = 10, batch_size: int = 32) -> float:
    """The ELBO summed over sequences and divided by the number of real frames (nats/frame)."""
    x, mask = data
    return test_elbo(model, guide, data, num_samples=num_samples, batch_size=batch_size) * x.shape[0] / real_frames(mask)


def iwae_per_frame(model, guide, data, k: int = 500, batch_size: int = 16, chunk: int = 50) -> float:
    """log p(x) per sequence by importance sampling with ``k`` draws of the whole sequence's
    z_{1:T} ~ q (the IWAE bound), summed and divided by the number of real frames."""
    x, mask = data
    log_px = iwae_log_likelihood(model, guide, data, k=k, batch_size=batch_size, chunk=chunk)
    return float(log_px.sum()) / real_frames(mask)


def sequence_metrics(model, guide, data, *, k: int = 500, elbo_samples: int = 10) -> dict:
    """Per-frame test numbers for a sequence model on held-out ``data = (x, mask)``:
    ``test_elbo_per_frame_nats``, ``test_iwae_per_frame_nats`` (log-likelihoods, negative;
    the literature's -ELBO/NLL are their negations), ``iwae_k``, ``frames``, ``sequences``."""
    x, mask = data
    return {
        "test_elbo_per_frame_nats": elbo_per_frame(model, guide, data, num_samples=elbo_samples),
        "test_iwae_per_frame_nats": iwae_per_frame(model, guide, data, k=k),
        "iwae_k": k,
        "frames": real_frames(mask),
        "sequences": int(x.shape[0]),
    }


@torch.no_grad()
def continuation_log_likelihood(model, guide, x: torch.Tensor, mask: torch.Tensor, prefix_frames: int,
                                steps: int | None = None, k: int = 200, chunk: int = 50) -> float:
    """log p(x_{P+1:P+S} | x_{1:P}) of the true continuation, per real continuation frame.

    With the same ``k`` draws z_{1:P+S} ~ q, the importance estimates of p(x_{1:P+S}) (all
    steps' weights) and of p(x_{1:P}) (the first P steps' weights) give
    log p(cont | prefix) ~ log sum_k w_k - log sum_k v_k: consistent as k grows (not a bound).
    Sequences no longer than P contribute nothing; S defaults to the rest of each sequence.
    """
    T = x.shape[1]
    keep = torch.arange(T, device=mask.device) < (prefix_frames + steps if steps is not None else T)
    mask = mask & keep
    frames = real_frames(mask[:, prefix_frames:])
    if frames == 0:
        raise ValueError(f"no sequence has real frames after the first {prefix_frames}")
    log_w = torch.cat([stepwise_log_weights(model, guide, x, mask, num_particles=min(chunk, k - j)).log_w
                       for j in range(0, k, chunk)])
    full = torch.logsumexp(log_w.sum(-1), 0)
    prefix = torch.logsumexp(log_w[..., :prefix_frames].sum(-1), 0)
    return float((full - prefix).sum()) / frames


__all__ = ["WeightedDraws", "stepwise_log_weights", "elbo_per_frame", "iwae_per_frame", "sequence_metrics",
           "continuation_log_likelihood", "real_frames"]

