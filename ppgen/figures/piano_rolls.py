"""Piano-roll figures: time to the right, pitch up (column 0 = MIDI note 21, A0)."""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from ..data.midi import as_roll
from ..data.polyphonic import KEYS, LOWEST_NOTE

#: the most rolls one figure draws (``ppgen sample -n``, ``ppgen continue -n``): one row of
#: 1.6 inches each, 64 rows make a figure about 10,000 pixels tall; more is a figure no one
#: can look at (and, far beyond it, more than matplotlib can render)
MAX_ROLLS = 64


def _draw(ax, roll, title=None, split: int | None = None):
    ax.imshow(as_roll(roll).T, origin="lower", aspect="auto", cmap="gray_r", vmin=0, vmax=1,
              interpolation="nearest")
    c_keys = [k for k in range(KEYS) if (k + LOWEST_NOTE) % 12 == 0]
    ax.set_yticks(c_keys, [f"C{(k + LOWEST_NOTE) // 12 - 1}" for k in c_keys], fontsize=6)
    if split is not None:
        ax.axvline(split - 0.5, color="tab:red", linewidth=1)
    if title:
        ax.set_title(title, fontsize=8)


def plot_piano_rolls(rolls, titles=None, *, height: float = 1.6) -> Figure:
    """One row per roll (a list of ``[T, 88]`` or an array ``[N, T, 88]``): time right, pitch up."""
    rolls = list(rolls)
    fig = Figure(figsize=(8, height * len(rolls)), layout="constrained")
    axes = fig.subplots(len(rolls), 1, squeeze=False)[:, 0]
    for i, (ax, roll) in enumerate(zip(axes, rolls)):
        _draw(ax, roll, titles[i] if titles else None)
    axes[-1].set_xlabel("frame")
    return fig


def plot_continuations(prefix, continuations, truth=None, *, height: float = 1.6) -> Figure:
    """A prefix ``[P, 88]`` followed by each sampled continuation ``[S, 88]`` (and the true one,
    when given) on rows that share the time axis; a red line marks where the prefix ends."""
    prefix = as_roll(prefix)
    rows = [(np.concatenate([prefix, as_roll(c)]), f"continuation {i + 1}") for i, c in enumerate(continuations)]
    if truth is not None:
        rows.insert(0, (np.concatenate([prefix, as_roll(truth)]), "true continuation"))
    fig = Figure(figsize=(8, height * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), 1, squeeze=False, sharex=True)[:, 0]
    for ax, (roll, title) in zip(axes, rows):
        _draw(ax, roll, title, split=len(prefix))
    axes[-1].set_xlabel("frame")
    return fig
