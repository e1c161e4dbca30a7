"""Where the training loop's minibatches come from: one interface, :class:`Batches`, so that
the loop is the same for data held in memory and data streamed from disk.

A source knows ``n``, the rows of the whole training set, and ``steps``, the minibatches per
epoch, and yields for ``epoch(e)`` this process's minibatches of epoch ``e`` as tuples of
tensors on the training device (the rows of the model's arguments). Shuffling draws from
torch's global generator, which the loop seeds and checkpoints, so a resumed run sees the
same batches as an uninterrupted one.
"""
from __future__ import annotations

import math
from typing import Iterator, Protocol, runtime_checkable

import torch


@runtime_checkable
class Batches(Protocol):
    """The loop's source of minibatches (see the module docstring)."""

    n: int
    steps: int

    def epoch(self, epoch: int) -> Iterator[tuple]:
        ...


class InMemory:
    """Tensors ``[N, ...]`` moved to ``device`` once, reshuffled every epoch by a permutation
    from the global generator, cut into minibatches of ``batch_size`` rows (the last one
    smaller)."""

    def __init__(self, data: tuple, batch_size: int, device):
        self.data = tuple(t.to(device) for t in data)
        self.batch_size = batch_size
        self.n = self.data[0].shape[0]
        self.steps = math.ceil(self.n / batch_size)
        self.device = device

    def epoch(self, epoch: int) -> Iterator[tuple]:
        perm = torch.randperm(self.n).to(self.device)
        for i in range(self.steps):
            rows = perm[i * self.batch_size:(i + 1) * self.batch_size]
            yield tuple(t[rows] for t in self.data)


__all__ = ["Batches", "InMemory"]
