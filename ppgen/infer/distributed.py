"""Data-parallel training on ``torch.distributed``, as launched by ``torchrun``.

``torchrun --nproc-per-node=N -m ppgen train ...`` starts N processes (ranks) with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address in their environment;
:func:`setup` joins them into one process group (gloo on the CPU, NCCL on CUDA, one GPU per
local rank). Without that environment, or with one process, nothing here does anything:
:func:`world` is 1, every helper returns its input, and a run is exactly the one-process run.

What data parallelism means here (the loop, :mod:`.loop`, and the families' steps use it):
every rank holds the same weights and takes its share of each global minibatch; the
gradients of the ranks' losses are averaged by ``DistributedDataParallel`` during the
backward pass, so every rank takes the same optimiser step. Scalars that decide what all
ranks do (a validation score, "did any rank see a non-finite loss") are all-reduced, so the
ranks never disagree.
"""
from __future__ import annotations

import datetime
import os
from typing import Callable, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

#: how long a collective waits for a missing rank before failing (seconds; torch's default; a rank that
#: dies is noticed at once, since torchrun then stops the others and gloo sees the closed connection)
TIMEOUT = datetime.timedelta(seconds=int(os.environ.get("PPGEN_DIST_TIMEOUT", "1800")))


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher that sets the
    torch.distributed environment) as one of several processes."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    """Whether a process group of more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's index among the run's processes (0 without a process group)."""
    return dist.get_rank() if active() else 0


def world() -> int:
    """How many processes share the run (1 without a process group)."""
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Whether this process writes the run's files and shows the progress bar (rank 0)."""
    return rank() == 0


def local_device(device: torch.device) -> torch.device:
    """The device of this process: under torchrun on CUDA, the GPU of its local rank; the
    given device otherwise."""
    if device.type == "cuda" and launched() and device.index is None:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def setup(device: torch.device) -> int:
    """Join the torchrun process group (once; later calls return at once) and return the
    number of processes. Without torchrun's environment: 1, and no group is made."""
    if not launched():
        return 1
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT)
    return world()


def shutdown() -> None:
    """Leave the process group (at the end of a command)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _collective_device() -> torch.device:
    # NCCL reduces CUDA tensors only; gloo CPU ones
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def all_reduce_sum(values: Sequence[float]) -> list[float]:
    """The sums of ``values`` over all processes (each process gives the same number of
    values); the values themselves without a process group."""
    if not active():
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(t)
    return t.tolist()


def mean_over_ranks(total: float, count: float) -> float:
    """sum of ``total`` over processes / sum of ``count``: a mean over every process's
    datapoints from each process's sum and number of them."""
    total, count = all_reduce_sum([total, count])
    return total / count


def failed_ranks(failed: bool) -> list[int]:
    """The ranks for which ``failed`` is true, the same list on every process (one
    all-reduce): the way to stop all ranks together when one of them cannot go on."""
    if not active():
        return [0] if failed else []
    flags = [0.0] * world()
    flags[rank()] = float(failed)
    return [r for r, f in enumerate(all_reduce_sum(flags)) if f]


def lost_peers(error: BaseException) -> str | None:
    """What ``error`` says, in a few words, when it says that another process of the group is
    gone (it died or was stopped); None for any other error. torch's distributed errors are
    said by their first line; gloo's reach Python as a plain ``RuntimeError`` naming gloo's
    transport (a closed or reset connection), whose long text is summed up."""
    if isinstance(error, dist.DistError):
        return (str(error).strip().splitlines() or [type(error).__name__])[0]
    if isinstance(error, RuntimeError) and launched() and "gloo/transport" in str(error):
        return "its connection to this process was closed"
    return None


def share(t: torch.Tensor) -> torch.Tensor:
    """This process's contiguous share of the rows of ``t`` (all of them in one process)."""
    return t if world() == 1 else t.tensor_split(world())[rank()]


def barrier() -> None:
    if active():
        dist.barrier()


def gather_objects(obj) -> list:
    """``obj`` of every process, by rank (``[obj]`` without a process group)."""
    if not active():
        return [obj]
    out = [None] * world()
    dist.all_gather_object(out, obj)
    return out


def data_parallel(module: nn.Module) -> nn.Module:
    """``module`` wrapped in ``DistributedDataParallel`` when several processes train: its
    weights are copied from rank 0 now, and the gradients of its parameters are averaged
    over the processes in every backward pass that follows a forward call of the wrapper.
    The module itself without a process group."""
    if not active():
        return module
    device = next(module.parameters()).device
    return DistributedDataParallel(module, device_ids=[device] if device.type == "cuda" else None)


class Synced(nn.Module):
    """Parameters of several modules (or part of one) as the one module that DDP wraps:
    ``forward(fn, *args)`` returns ``fn(*args)``. A loss computed in ``fn`` with these
    parameters has their gradients averaged over the processes by DDP in its backward pass.
    Used where the loss is not one module's forward (a Pyro pair's ELBO, the VAE-GAN's two
    updates of parts of one model). The parameters are the modules' own (no copies), so the
    optimisers and checkpoints see the same tensors."""

    def __init__(self, params):
        super().__init__()
        self.params = nn.ParameterList([p for p in params if p.requires_grad])

    def forward(self, fn: Callable, *args, **kwargs):
        return fn(*args, **kwargs)


def synced(params) -> Callable:
    """``run(fn, *args) -> fn(*args)``: with several processes, ``fn`` runs inside the DDP
    forward of :class:`Synced` over ``params`` (a list of ``nn.Parameter``); without, it is
    called as it is, so a one-process run is unchanged."""
    params = list(params)
    return data_parallel(Synced(params)) if active() else unsynced


def unsynced(fn: Callable, *args, **kwargs):
    """``fn(*args)``: what :func:`synced` gives in one process."""
    return fn(*args, **kwargs)


__all__ = ["launched", "active", "rank", "world", "is_main", "local_device", "setup", "shutdown", "all_reduce_sum",
           "mean_over_ranks", "failed_ranks", "lost_peers", "barrier", "gather_objects", "data_parallel", "Synced", "synced", "unsynced",
           "TIMEOUT"]
