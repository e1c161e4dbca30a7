"""The optional methods a model or guide may declare, and that ppgen then calls.

A model/guide pair needs none of them: any Pyro program (function, ``nn.Module``,
``PyroModule``, autoguide) trains and is evaluated from its traces. A pair that declares one
gets the matching service:

- ``model.check_data(*data)``: raise ``ValueError`` naming what is wrong with the data;
  ``fit`` calls it once, before training, instead of letting a bad batch fail mid-run.
- ``model.check_prior()``: raise ``ValueError`` if the prior set on the model does not fit it
  (``check_sites`` calls it before comparing sites).
- ``guide.check_model(model)``: raise if the guide cannot guide that model (a spike-and-slab
  guide needs a spike-and-slab prior).
- ``model.sample(n, ...)``: draws from p(x); figures and sample-quality metrics use it.
- ``model.z_dims`` and ``model.conditional(layer, z_above) -> (loc, scale)``: a hierarchy of
  Gaussian layers p(z_l | z_{l+1}) whose top-down pass a ladder guide shares.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class ChecksData(Protocol):
    def check_data(self, *data) -> None: ...


@runtime_checkable
class ChecksPrior(Protocol):
    def check_prior(self) -> None: ...


@runtime_checkable
class ChecksModel(Protocol):
    def check_model(self, model) -> None: ...


@runtime_checkable
class Samples(Protocol):
    def sample(self, n: int, *args, **kwargs): ...


@runtime_checkable
class TopDown(Protocol):
    z_dims: tuple

    def conditional(self, layer: int, z_above): ...


__all__ = ["ChecksData", "ChecksPrior", "ChecksModel", "Samples", "TopDown"]
