"""Where the training loop's minibatches come from: one interface, :class:`Batches`, so that
the loop is the same for data held in memory and data streamed from disk.

A source knows ``n``, the rows of the whole training set, and ``steps``, the minibatches per
epoch, and yields for ``epoch(e)`` this process's minibatches of epoch ``e`` as tuples of
tensors on the training device (the rows of the model's arguments). Shuffling draws from
torch's global generator, which the loop seeds and checkpoints, so a resumed run sees the
same batches as an uninterrupted one.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Iterator, Protocol, runtime_checkable

import torch
from torch.utils.data import DataLoader, Sampler


@runtime_checkable
class Batches(Protocol):
    """The loop's source of minibatches (see the module docstring)."""

    n: int
    steps: int

    def epoch(self, epoch: int) -> Iterator[tuple]:
        ...


class InMemory:
    """Tensors ``[N, ...]`` moved to ``device`` once, reshuffled every epoch, cut into global
    minibatches of ``batch_size`` rows (the last one smaller), of which this process takes
    its share (:class:`Shard`; all of each batch in one process)."""

    def __init__(self, data: tuple, batch_size: int, device, shard: "Shard | None" = None):
        self.data = tuple(t.to(device) for t in data)
        self.batch_size = batch_size
        self.n = self.data[0].shape[0]
        self.shard = shard or Shard()
        self.steps = self.shard.steps(self.n, batch_size)
        self.device = device

    def epoch(self, epoch: int) -> Iterator[tuple]:
        for rows in self.shard.rows(self.n, self.batch_size, epoch, self.device):
            yield tuple(t[rows] for t in self.data)


@dataclass(frozen=True)
class Shard:
    """This process's part of every epoch (DistributedSampler semantics): process ``rank`` of
    ``world`` takes the ``rank``-th of ``world`` contiguous near-equal parts of every global
    minibatch. One process (``world`` 1) shuffles by a permutation from torch's global
    generator, as ever (the loop seeds and checkpoints it). Several processes, each drawing
    its own random numbers, shuffle by a generator seeded with ``seed + epoch``: the same
    permutation on every rank, a new one every epoch, and the same whatever the number of
    processes. A final global batch with fewer rows than processes is dropped there (a rank
    without rows could not take part in the gradient average)."""

    rank: int = 0
    world: int = 1
    seed: int = 0

    def permutation(self, n: int, epoch: int) -> torch.Tensor:
        if self.world == 1:
            return torch.randperm(n)
        return torch.randperm(n, generator=torch.Generator().manual_seed(self.seed + epoch))

    def steps(self, n: int, batch_size: int) -> int:
        """Minibatches per epoch, the same on every process."""
        full, rest = divmod(n, batch_size)
        return full + (rest >= self.world if rest else 0)

    def rows(self, n: int, batch_size: int, epoch: int, device="cpu") -> list[torch.Tensor]:
        """The row indices of this process's minibatches of ``epoch``."""
        perm = self.permutation(n, epoch).to(device)
        batches = [perm[i:i + batch_size] for i in range(0, self.steps(n, batch_size) * batch_size, batch_size)]
        return [b.tensor_split(self.world)[self.rank] for b in batches]


class Streamed:
    """Rows read from disk batch by batch: ``rows`` is a map-style ``torch.utils.data.Dataset``
    whose ``rows[idx]`` reads the rows ``idx`` (an int64 array) as one tensor, such as
    :class:`ppgen.data.stream.MappedRows`. Each epoch's rows are this process's
    :class:`Shard` of the epoch's shuffled global batches (the same rows, batch for batch, as
    :class:`InMemory` gives for the same seed and shard); the batches are read through a
    ``DataLoader``: ``workers`` processes reading ahead (default
    :func:`default_workers`), pinned memory on CUDA, batches moved with ``non_blocking``.
    ``check(batch, where)`` (optional) sees each batch of the first epoch this source reads
    on the CPU before it is moved (data checks: raise ``ValueError``; ``where`` names the
    epoch and step): every epoch holds every row, so that checks each row once at the cost of
    one epoch's checks, not every epoch's.

    Before each epoch ``rows.check_unchanged()`` (where ``rows`` has it, as
    :class:`~ppgen.data.stream.MappedRows`) checks that the files still hold what was mapped;
    an error raised in a worker process is raised again here with its own one-line message.

    The DataLoader gets its own generator: it draws a seed for its workers on every epoch,
    which must not advance torch's global generator (the run's random draws would change
    with the data source, and resume would not be exact)."""

    def __init__(self, rows, batch_size: int, device, shard: Shard | None = None, *, workers: int | None = None,
                 check: Callable[[tuple, str], None] | None = None):
        self.rows, self.batch_size, self.device, self.check = rows, batch_size, torch.device(device), check
        self.n = len(rows)
        self.shard = shard or Shard()
        self.steps = self.shard.steps(self.n, batch_size)
        self._order = _EpochOrder()
        workers = default_workers(self.device) if workers is None else workers
        self.loader = DataLoader(rows, batch_size=None, sampler=self._order, num_workers=workers,
                                 pin_memory=self.device.type == "cuda", persistent_workers=workers > 0,
                                 prefetch_factor=4 if workers else None, generator=torch.Generator())

    def epoch(self, epoch: int) -> Iterator[tuple]:
        # numpy indices: a worker receives them pickled, cheaper than a tensor in shared memory
        self._order.chunks = [rows.numpy() for rows in self.shard.rows(self.n, self.batch_size, epoch)]
        check, self.check = self.check, None
        unchanged = getattr(self.rows, "check_unchanged", None)
        if unchanged:
            unchanged()
        batches = iter(self.loader)
        for i in range(len(self._order)):
            try:
                x = next(batches)
            except StopIteration:
                return
            except (ValueError, OSError) as e:
                raise _from_worker(e) from None
            if check:
                check((x,), f"epoch {epoch + 1}, step {i + 1}")
            yield (x.to(self.device, non_blocking=True),)


def _from_worker(error: Exception) -> Exception:
    """``error`` as raised in a DataLoader worker, which the DataLoader raises again with the
    worker's whole traceback as its message ("Caught ValueError in DataLoader worker process
    0. Original Traceback ..."): the same type with the original one-line message."""
    text = str(error)
    last = text.rstrip().splitlines()[-1] if text.strip() else ""
    if not text.startswith("Caught ") or ": " not in last:
        return error
    try:
        return type(error)(last.split(": ", 1)[1])
    except TypeError:  # an exception type that takes other arguments: keep the DataLoader's
        return error


def default_workers(device: torch.device) -> int:
    """DataLoader workers for a streamed source: on CUDA up to 4 (reading and conversion
    overlap the GPU's work); on the CPU none, since a worker would take a core from the
    training step and reading a batch costs far less than the step (BENCHMARKS.md,
    "Streaming data")."""
    return min(4, max(1, (os.cpu_count() or 2) - 1)) if device.type == "cuda" else 0


class _EpochOrder(Sampler):
    """The DataLoader's sampler: yields the current epoch's batches of row indices (one item
    per batch), set by :meth:`Streamed.epoch` before the epoch is read. Iterated in the main
    process, so persistent workers need no new state per epoch."""

    def __init__(self):
        self.chunks: list = []

    def __iter__(self):
        return iter(self.chunks)

    def __len__(self) -> int:
        return len(self.chunks)


__all__ = ["Batches", "InMemory", "Shard", "Streamed", "default_workers"]
