"""Held-out evaluation of sequence models in nats per frame, as in the polyphonic-music literature.

Sign convention: every number here is a log-density per real (unpadded) frame, higher is
better and negative for binary piano rolls. Papers report "-ELBO" / NLL per frame: the same
numbers with the sign flipped (Pyro's DMM example: test -ELBO 6.87 = ELBO -6.87 here).
"""
from __future__ import annotations

from typing import NamedTuple

import pyro
import torch

from ..infer.importance import importance_sample
from ..nn import eval_mode
from .bounds import DRAW_BUDGET, draw_bytes, draw_plan, draw_progress, iwae_log_likelihood, test_elbo
from .latents import step_site

class WeightedDraws(NamedTuple):
    """``log_w[k, b, t]`` = log p(x_t, z_t | past) - log q(z_t | ...) at step t of draw k (0 on
    padding), so ``log_w.sum(-1)`` is the whole-sequence importance weight; ``z`` lists the
    draws of z_t, ``[K, B, z_dim]`` each."""

    log_w: torch.Tensor
    z: list


@torch.no_grad()
def stepwise_log_weights(model, guide, x: torch.Tensor, mask: torch.Tensor, num_particles: int = 1) -> WeightedDraws:
    """Draw ``num_particles`` z_{1:T} ~ q(. | x) per sequence (:func:`ppgen.infer.importance_sample`),
    and group each site's share of the log-weight by its step (sites ``z_{t}``, ``x_{t}``)."""
    with pyro.validation_enabled(False), eval_mode(model, guide):
        draws = importance_sample(model, guide, x, mask, num_particles=num_particles)
        terms = draws.site_terms()
    steps = {name: _step(name) for name in terms}
    T = 1 + max(steps.values())
    log_w = x.new_zeros(num_particles, x.shape[0], T)
    for name, term in terms.items():
        log_w[..., steps[name]] += term
    z = [draws.guide_sites[f"z_{t}"]["value"].expand(num_particles, x.shape[0], -1) for t in range(T)]
    return WeightedDraws(log_w, z)


def _step(name: str) -> int:
    step = step_site(name)
    if step is None or step[0] not in ("z", "x"):
        raise ValueError(f"expected sequence sites named z_{{t}} and x_{{t}}, found {name!r}")
    return step[1]


def real_frames(mask: torch.Tensor) -> int:
    return int(mask.sum())


def elbo_per_frame(model, guide, data, num_samples: int = 10, batch_size: int = 32) -> float:
    """The ELBO summed over sequences and divided by the number of real frames (nats/frame)."""
    x, mask = data
    return test_elbo(model, guide, data, num_samples=num_samples, batch_size=batch_size) * x.shape[0] / real_frames(mask)


def length_groups(mask: torch.Tensor, k: int, frame_bytes: int, budget: int = DRAW_BUDGET) -> list:
    """The sequences of ``mask [N, T]`` in groups for importance sampling with ``k`` draws each:
    a list of ``(index, frames)``, ``index`` the sequences of a group (longest first) and
    ``frames`` its longest real length, to which the group is cut. Sequences of similar length
    go together, so a pass spends no steps on padding beyond its longest sequence, and a group
    holds as many as fit all their ``k`` draws in ``budget`` bytes (``frame_bytes`` per frame
    and draw); a sequence too long for that is a group of its own, whose draws are then split
    (:func:`ppgen.evaluate.draw_plan`)."""
    lengths = mask.sum(-1)
    order = torch.sort(lengths, descending=True, stable=True).indices
    groups, start = [], 0
    while start < len(order):
        frames = int(lengths[order[start]])
        size = max(1, budget // max(1, k * frames * frame_bytes))
        groups.append((order[start:start + size], frames))
        start += size
    return groups


@torch.no_grad()
def frame_bytes(model, guide, x: torch.Tensor, mask: torch.Tensor) -> int:
    """The memory of one importance draw per frame of a sequence, in bytes
    (:func:`ppgen.evaluate.draw_bytes` on the longest sequence, divided by its length)."""
    lengths = mask.sum(-1)
    longest = int(lengths.argmax())
    frames = int(lengths[longest])
    one = (x[longest:longest + 1, :frames], mask[longest:longest + 1, :frames])
    return max(1, draw_bytes(model, guide, one) // frames)


@torch.no_grad()
def iwae_per_sequence(model, guide, data, k: int = 500, *, budget: int = DRAW_BUDGET,
                      progress: bool = False) -> torch.Tensor:
    """log p(x_n) of each sequence ``[N]`` by importance sampling with ``k`` draws of its whole
    z_{1:T} ~ q (the IWAE bound), the sequences taken in :func:`length_groups` (each group
    cut to its longest real length: the cut steps are padding, masked out of every site, so
    the weights are those of the uncut data), each group in passes of :func:`draw_plan`."""
    x, mask = data
    per_frame = frame_bytes(model, guide, x, mask)
    groups = length_groups(mask, k, per_frame, budget)
    values = []
    with draw_progress(k * x.shape[0], progress, f"IWAE log p(x), K={k}") as bar:
        for index, frames in groups:
            batch_size, chunk = draw_plan(len(index), k, per_frame * frames, budget)
            values.append(iwae_log_likelihood(model, guide, (x[index, :frames], mask[index, :frames]), k, batch_size,
                                              chunk, bar=bar))
    out = values[0].new_empty(x.shape[0])
    for (index, _), v in zip(groups, values):
        out[index] = v
    return out


def iwae_per_frame(model, guide, data, k: int = 500, *, budget: int = DRAW_BUDGET, progress: bool = False) -> float:
    """log p(x) per sequence by importance sampling with ``k`` draws of the whole sequence's
    z_{1:T} ~ q (the IWAE bound, :func:`iwae_per_sequence`), summed and divided by the number
    of real frames."""
    log_px = iwae_per_sequence(model, guide, data, k, budget=budget, progress=progress)
    return float(log_px.sum()) / real_frames(data[1])


def sequence_metrics(model, guide, data, *, k: int = 500, elbo_samples: int = 10, progress: bool = False) -> dict:
    """Per-frame test numbers for a sequence model on held-out ``data = (x, mask)``:
    ``test_elbo_per_frame_nats``, ``test_iwae_per_frame_nats`` (log-likelihoods, negative;
    the literature's -ELBO/NLL are their negations), ``iwae_k``, ``frames``, ``sequences``.
    ``progress`` shows a bar for the importance draws."""
    x, mask = data
    return {
        "test_elbo_per_frame_nats": elbo_per_frame(model, guide, data, num_samples=elbo_samples),
        "test_iwae_per_frame_nats": iwae_per_frame(model, guide, data, k=k, progress=progress),
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


__all__ = ["step_site", "WeightedDraws", "stepwise_log_weights", "elbo_per_frame", "length_groups", "frame_bytes", "iwae_per_sequence",
           "iwae_per_frame", "sequence_metrics",
           "continuation_log_likelihood", "real_frames"]



@torch.no_grad()
def states_after_prefix(model, guide, x_prefix: torch.Tensor, mask_prefix: torch.Tensor, num: int = 1,
                        particles: int = 64) -> tuple:
    """``num`` draws of a sequence model's state h_L after each prefix's L real frames (tensors
    ``[num, B, hidden]``), by sampling-importance-resampling.

    The future depends on the prefix only through h_L, which depends on z_{1:L}. We draw
    ``particles`` z_{1:L} ~ q from ``guide`` run on the prefix alone, weight each by
    p(x_{1:L}, z_{1:L}) / q(z_{1:L} | x), and resample: as ``particles`` grows the states
    approach draws under the model's own posterior p(z_{1:L} | x_{1:L}), whatever the guide's
    quality. ``model`` supplies ``states(x, z)`` (h_0..h_T, each a state tuple)."""
    draws = stepwise_log_weights(model, guide, x_prefix, mask_prefix, num_particles=particles)
    T = draws.log_w.shape[-1]
    states = model.states(x_prefix[:, :T], draws.z)
    lengths = mask_prefix[:, :T].sum(-1)
    B = x_prefix.shape[0]
    batch = torch.arange(B, device=x_prefix.device)
    pick = torch.distributions.Categorical(logits=draws.log_w.sum(-1).T).sample((num,))  # [num, B]
    out = []
    for i in range(len(states[0])):
        per_step = torch.stack([s[i].expand(particles, B, -1) for s in states], dim=-2)  # [K, B, T+1, H]
        out.append(per_step[:, batch, lengths][pick, batch])                            # [num, B, H]
    return tuple(out)


@torch.no_grad()
def continue_sequences(model, guide, x_prefix: torch.Tensor, mask_prefix: torch.Tensor, steps: int,
                       num_continuations: int = 1, particles: int = 64, mean: bool = False) -> torch.Tensor:
    """``num_continuations`` continuations of ``steps`` frames after each prefix,
    ``[num, B, steps, x_dim]``: each starts right after its sequence's last real frame, from a
    state of :func:`states_after_prefix`, and runs ``model.generate`` (frames, or the means of
    p(x_t | z_t, h_{t-1}) when ``mean``)."""
    state = states_after_prefix(model, guide, x_prefix, mask_prefix, num_continuations, particles)
    return model.generate(state, steps, mean=mean)


__all__ += ["states_after_prefix", "continue_sequences"]
