"""Check that a guide samples exactly the model's latent sites, before any training, and
find from a trace which of a model's sites are per-datapoint (inside the data plate) and
which are global."""
from __future__ import annotations

import inspect
import re
from dataclasses import dataclass

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites

from ..models.interfaces import ChecksModel, ChecksPrior


class SiteMismatchError(ValueError):
    pass


def trace_program(fn, *args, **kwargs):
    """One run of ``fn(*args)`` as a Pyro trace, plate subsample sites pruned; hidden from
    outer handlers and with Pyro's validation off (a check, not a step of inference)."""
    with pyro.validation_enabled(False), poutine.block():
        return prune_subsample_sites(poutine.trace(fn).get_trace(*args, **kwargs))


def latent_sites(fn, *args, **kwargs) -> list[str]:
    """Names of the latent sample sites of one run of ``fn(*args)``: not observed, not plate
    subsample sites, not a guide's auxiliary sites (an AutoGuide's unconstrained draws)."""
    return _latent_names(trace_program(fn, *args, **kwargs))


def _latent_names(trace) -> list[str]:
    return [name for name, site in trace.nodes.items()
            if site["type"] == "sample" and not site["is_observed"] and not site["infer"].get("is_auxiliary")]


def check_sites(model, guide, *args, **kwargs) -> list[str]:
    """Trace ``model`` and ``guide`` on ``args`` (a small batch is enough) and raise
    :class:`SiteMismatchError` listing both site sets if they differ. Guides that need a
    particular prior say so through an optional ``check_model(model)`` method, and models
    that allow only some priors through ``check_prior()`` (:mod:`ppgen.models.interfaces`).

    A program that cannot run on ``args`` at all (a guide written for another model's call
    signature, a shape error) raises :class:`SiteMismatchError` naming model, guide, the
    program that failed and its error, with the site set of the other program when it ran."""
    if isinstance(model, ChecksPrior):
        model.check_prior()
    if isinstance(guide, ChecksModel):
        guide.check_model(model)
    guide_sites, guide_error = _try_latent_sites(guide, args, kwargs)
    model_sites, model_error = _try_latent_sites(model, args, kwargs)
    if guide_error or model_error:
        role, error = ("guide", guide_error) if guide_error else ("model", model_error)
        _check_dtypes(role, model if role == "model" else guide, error, model, args, kwargs)
        other = (f"; the model ran and has latent sites {sorted(model_sites)}" if guide_error and not model_error else
                 f"; the guide ran and samples sites {sorted(guide_sites)}" if model_error and not guide_error else "")
        raise SiteMismatchError(
            f"the {role} could not be run on the model's arguments ({_describe(model, args, kwargs)}) "
            f"[model {_name(model)}, guide {_name(guide)}]: {type(error).__name__}: {error}{other}; "
            "a guide takes the model's arguments and samples exactly the model's latent sites"
        ) from error
    if sorted(guide_sites) != sorted(model_sites):
        raise SiteMismatchError(
            f"guide {_name(guide)} samples sites {sorted(guide_sites)} but model {_name(model)} "
            f"has latent sites {sorted(model_sites)}; a guide must sample exactly the model's latent sites"
        )
    return model_sites


def _try_latent_sites(fn, args, kwargs) -> tuple[list, Exception | None]:
    try:
        return latent_sites(fn, *args, **kwargs), None
    except SiteMismatchError:  # already names what does not fit
        raise
    except Exception as e:  # noqa: BLE001 -- any failure of a user's program is reported with its cause
        return [], e


#: what torch says when a computation meets a tensor of a dtype it cannot mix or compute with
_DTYPE_ERROR = re.compile(r"dtype|scalar type|result type|not implemented for '")


def _check_dtypes(role, program, error, model, args, kwargs) -> None:
    """A program that failed on arguments of a dtype other than the model's
    (``torch.get_default_dtype()``), with an error about dtypes, raises a one-line
    ``TypeError`` naming the arguments and their dtypes: a dtype problem, not a site mismatch."""
    dtype = torch.get_default_dtype()
    odd = {name: a.dtype for name, a in _named_args(model, args, kwargs).items()
           if isinstance(a, torch.Tensor) and a.dtype != dtype}
    if not odd or not _DTYPE_ERROR.search(str(error)):
        return
    listed = ", ".join(f"{name} is {str(t).replace('torch.', '')}" for name, t in odd.items())
    raise TypeError(f"the {role} {_name(program)} cannot compute with its arguments' dtypes ({listed}; the model's "
                    f"dtype is {str(dtype).replace('torch.', '')}): {type(error).__name__}: {_first_line(error)}; "
                    "convert them to the dtype the model computes with (bool, integer and half-precision data as "
                    "the first argument are converted by ppgen)") from error


def _first_line(error) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else ""


def _named_args(model, args, kwargs) -> dict:
    """The arguments under the model's names for them where its signature gives them."""
    try:
        signature = inspect.signature(getattr(model, "forward", model))  # an nn.Module's call is forward's
        if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in signature.parameters.values()):
            raise TypeError("no names")
        return dict(signature.bind(*args, **kwargs).arguments)
    except (TypeError, ValueError):
        return {**{f"arg {i}": a for i, a in enumerate(args)}, **kwargs}


def _describe(model, args, kwargs) -> str:
    """``x: tensor (2, 784), mask: tensor (2, 16)``: the arguments under the model's names
    for them where its signature gives them."""
    def one(a):
        return f"tensor {tuple(a.shape)}" if hasattr(a, "shape") else type(a).__name__
    return ", ".join(f"{name}: {one(a)}" for name, a in _named_args(model, args, kwargs).items())


@dataclass(frozen=True)
class SiteStructure:
    """Which sites of a model are per-datapoint, found from one trace on a batch of ``rows``.

    ``data_plate``: the plate at dim -1 that the observed sites are in (its name is whatever
    the model calls it), None if no observed site is in one. ``subsampled``: that plate
    subsamples by itself (its full size differs from its size, or from the batch's rows),
    so it already scales its sites; a plate without a size (``pyro.plate("data")``, size -1
    in its frame: any size) takes the batch as it is and does not subsample. ``local``: latent sites inside the data plate;
    ``global_latents``: latent sites outside it; ``observed``: the observed sites."""

    data_plate: str | None
    subsampled: bool
    local: tuple
    global_latents: tuple
    observed: tuple


def site_structure(model, *args, **kwargs) -> SiteStructure:
    """Trace ``model(*args)`` once and sort its sites into local and global (see
    :class:`SiteStructure`); the first argument's first dim is the batch's rows."""
    rows = args[0].shape[0] if args and hasattr(args[0], "shape") and args[0].dim() else None
    trace = trace_program(model, *args, **kwargs)
    sites = [(name, s) for name, s in trace.nodes.items() if s["type"] == "sample"]
    observed = tuple(name for name, s in sites if s["is_observed"])
    frame = next((f for name, s in sites if s["is_observed"] for f in s["cond_indep_stack"]
                  if f.vectorized and f.dim == -1), None)
    latent = set(_latent_names(trace))
    local = tuple(name for name, s in sites if name in latent and frame is not None
                  and any(f.name == frame.name for f in s["cond_indep_stack"]))
    global_latents = tuple(name for name, _ in sites if name in latent and name not in local)
    subsampled = frame is not None and frame.size != -1 and ((frame.full_size or frame.size) != frame.size
                                                             or (rows is not None and frame.size != rows))
    return SiteStructure(frame.name if frame is not None else None, subsampled, local, global_latents, observed)


def enumerated_sites(guide, *args, **kwargs) -> list[str]:
    """The guide's sample sites marked for enumeration (``infer={"enumerate": ...}``, as
    ``config_enumerate`` sets it), from one run of ``guide(*args)``: discrete latents that
    Pyro's ``TraceEnum_ELBO`` sums out instead of sampling."""
    trace = trace_program(guide, *args, **kwargs)
    return [name for name, site in trace.nodes.items()
            if site["type"] == "sample" and not site["is_observed"] and site["infer"].get("enumerate")]


def plate_nesting(model, guide, *args, **kwargs) -> int:
    """How many plate dims the pair uses (``max_plate_nesting`` for Pyro's ELBOs), from one
    run of the guide and of the model replayed on it: the largest -dim of a vectorized plate."""
    guide_trace = trace_program(guide, *args, **kwargs)
    model_trace = trace_program(poutine.replay(model, trace=guide_trace), *args, **kwargs)
    return max((-f.dim for trace in (guide_trace, model_trace) for site in trace.nodes.values()
                if site["type"] == "sample" for f in site["cond_indep_stack"] if f.vectorized), default=0)


def label_site(model, x, y) -> str:
    """The site that ``y`` fills in ``model(x, y)``: observed there and latent in
    ``model(x)`` (the class label of a semi-supervised model, Kingma et al. 2014's M2). Found
    from the two traces; ``ValueError`` unless exactly one site is."""
    observed = [name for name, site in trace_program(model, x, y).nodes.items()
                if site["type"] == "sample" and site["is_observed"]]
    latent = set(_latent_names(trace_program(model, x)))
    found = [name for name in observed if name in latent]
    if len(found) != 1:
        raise ValueError(f"model {_name(model)}: expected one site observed in model(x, y) and latent in model(x) "
                         f"(the label), found {found or 'none'}")
    return found[0]


def _name(fn) -> str:
    return type(fn).__name__ if not hasattr(fn, "__name__") else fn.__name__
