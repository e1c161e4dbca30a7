"""K draws of a Pyro program's sites: vectorized in a plate when the program broadcasts,
otherwise K plate-free runs stacked to look exactly like the vectorized run.

Evaluation draws many particles at once, in a plate named :data:`PARTICLES` left of every
plate of the program. A program whose code does not broadcast over that leading dim (a
``PyroModule[nn.Linear]`` with ``PyroSample`` weights: ``F.linear`` takes a 2-D weight only)
either raises or returns sites without the draws. :func:`draw_sites` tries the vectorized
run (the normal path, which costs a few shape checks more); where it fails, it runs the
program once per draw without the plate and stacks the runs: each site's ``value`` and
distribution (:class:`~ppgen.distributions.stacked.Stacked`) get the draws at
``particle_dim``, its ``cond_indep_stack`` the particles frame, ``scale`` and ``mask`` are
stacked where they differ between draws. Every reader of a site (log-densities, masks,
plates, ``sample``, ``mean``) then sees what a vectorized run gives. The decision is
remembered per program (held by weak reference) and announced once with a ``UserWarning``.
"""
from __future__ import annotations

import contextlib
import weakref
import warnings
from typing import Callable

import pyro
import torch
from pyro.poutine.indep_messenger import CondIndepStackFrame
from pyro.poutine.messenger import unwrap

from ..distributions.stacked import Stacked

PARTICLES = "_particles"  # the plate that vectorizes the draws


def draw_sites(run: Callable, programs: tuple, num_particles: int | None, particle_dim: int) -> tuple:
    """``run(particles)`` (``particles`` a ``pyro.plate`` wrapping the programs, or None for a
    plain run) returns a tuple of site lists ``[(name, msg), ...]``; this returns what
    ``run`` gives for ``num_particles`` draws vectorized at ``particle_dim``, or the same
    built from ``num_particles`` plate-free runs where ``programs`` (the model and guide that
    ``run`` calls) do not broadcast over the draws. ``num_particles`` None: one plain run."""
    if num_particles is None:
        return run(None)
    if _LOOPED.forced or _NOT_BROADCASTING.holds(programs):
        return _looped(run, num_particles, particle_dim)
    try:
        sites = run(pyro.plate(PARTICLES, num_particles, dim=particle_dim))
    except torch.OutOfMemoryError:
        raise
    except Exception as error:  # noqa: BLE001 -- the plate-free run below tells broadcasting from a real failure
        failure, reason = error, f"{type(error).__name__}: {error}"
    else:
        reason = _missing_draws(sites, num_particles, particle_dim)
        if reason is None:
            return sites
        failure = None
    try:
        looped = _looped(run, num_particles, particle_dim)
    except Exception:
        if failure is not None:
            raise failure from None  # the program fails without the draws too: not a broadcasting problem
        raise
    _NOT_BROADCASTING.add(programs)
    warnings.warn(f"{_describe(programs)} does not broadcast over a leading draw dimension ({_first_line(reason)}); "
                  f"drawing {num_particles} times in a loop (slower)", UserWarning, stacklevel=2)
    return looped


@contextlib.contextmanager
def looped():
    """Inside this context every :func:`draw_sites` runs its draws one at a time, whether the
    programs broadcast or not (to compare the two paths)."""
    before, _LOOPED.forced = _LOOPED.forced, True
    try:
        yield
    finally:
        _LOOPED.forced = before


def does_not_broadcast(*programs) -> None:
    """Declare that the pair ``programs`` (model, guide; or a guide alone) does not broadcast
    over a leading draw dimension, so that no vectorized attempt is made for it."""
    _NOT_BROADCASTING.add(programs)


def _missing_draws(sites: tuple, k: int, dim: int) -> str | None:
    """Why a vectorized run's sites are not K draws (a site whose log-density has no dim of
    size ``k`` at ``dim``), None when every site has them."""
    for site_list in sites:
        for name, msg in site_list:
            fn, value = msg["fn"], msg["value"]
            if not hasattr(fn, "batch_shape") or not isinstance(value, torch.Tensor):
                continue
            batch = fn.batch_shape
            if len(batch) >= -dim and batch[dim] == k:  # the normal case, a few attribute reads
                continue
            try:
                batch = torch.broadcast_shapes(fn.batch_shape, value.shape[:max(0, value.dim() - fn.event_dim)])
            except RuntimeError as e:
                return f"site {name!r}: {e}"
            size = batch[dim] if len(batch) >= -dim else 1
            if size != k:
                return f"site {name!r} has batch shape {tuple(batch)}, without the {k} draws at dim {dim}"
    return None


def _looped(run: Callable, k: int, particle_dim: int) -> tuple:
    runs = [run(None) for _ in range(k)]
    frame = CondIndepStackFrame(PARTICLES, particle_dim, k, 0, k)
    out = []
    for i, first in enumerate(runs[0]):
        names = [name for name, _ in first]
        for other in runs[1:]:
            if [name for name, _ in other[i]] != names:
                raise ValueError(f"the draws run different sites ({names} vs {[n for n, _ in other[i]]}); drawing them "
                                 "one at a time needs the same sites in every run")
        out.append([(name, _stack_site([dict(r[i])[name] for r in runs], frame)) for name in names])
    return tuple(out)


def _stack_site(msgs: list, frame) -> dict:
    """One message for the K runs' messages of a site, as the vectorized run would give it."""
    first = msgs[0]
    fn = Stacked([m["fn"] for m in msgs], frame.dim)
    site = dict(first, fn=fn, cond_indep_stack=(frame, *first["cond_indep_stack"]))
    values = [m["value"] for m in msgs]
    if not (first["is_observed"] and _same(values)):  # data stay as given, latents get the draws
        site["value"] = fn.stack(values, fn.event_dim)
    for key in ("scale", "mask"):
        parts = [m.get(key) for m in msgs]
        if not _same(parts):
            site[key] = fn.stack([torch.as_tensor(p if p is not None else True) for p in parts], 0)
    return site


def _same(parts: list) -> bool:
    first = parts[0]
    if all(p is first for p in parts[1:]):
        return True
    if isinstance(first, torch.Tensor):
        return all(isinstance(p, torch.Tensor) and p.shape == first.shape and torch.equal(p, first) for p in parts[1:])
    return all(not isinstance(p, torch.Tensor) and p == first for p in parts[1:])


class ProgramSet:
    """A set of program tuples, each program held by weak reference (a bound method by its
    object and function; a poutine-wrapped program by the program inside): what is
    remembered dies with the programs. Programs that take no weak reference are not
    remembered (their vectorized run is tried again each time)."""

    def __init__(self):
        self._by_first = weakref.WeakKeyDictionary()

    @staticmethod
    def _key(program):
        program = unwrap(program)
        return getattr(program, "__self__", program), getattr(program, "__func__", None)

    def _entries(self, programs: tuple):
        anchor, func = self._key(programs[0])
        try:
            return self._by_first.setdefault(anchor, []), func
        except TypeError:  # not weakly referenceable
            return None, func

    def holds(self, programs: tuple) -> bool:
        entries, func = self._entries(programs)
        return entries is not None and any(self._matches(e, func, programs[1:]) for e in entries)

    def add(self, programs: tuple) -> None:
        entries, func = self._entries(programs)
        if entries is None or any(self._matches(e, func, programs[1:]) for e in entries):
            return
        try:
            rest = [(weakref.ref(a), f) for a, f in map(self._key, programs[1:])]
        except TypeError:
            return
        entries.append((func, rest))

    def _matches(self, entry, func, rest: tuple) -> bool:
        first_func, others = entry
        if first_func is not func or len(others) != len(rest):
            return False
        return all(ref() is anchor and f is g for (ref, f), (anchor, g) in zip(others, map(self._key, rest)))


_NOT_BROADCASTING = ProgramSet()


class _Forced:
    forced = False


_LOOPED = _Forced()


def _describe(programs: tuple) -> str:
    names = [_name(p) for p in programs]
    return f"model {names[0]} with guide {names[1]}" if len(names) == 2 else f"program {names[0]}"


def _name(fn) -> str:
    fn = unwrap(fn)
    return getattr(fn, "__name__", type(fn).__name__)


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else text
    return line if len(line) <= 200 else line[:197] + "..."


__all__ = ["PARTICLES", "draw_sites", "looped", "does_not_broadcast", "ProgramSet"]
