"""Posterior diagnostics for variational fits, as ArviZ data (:mod:`.vi`, the only module that
imports ArviZ), and the HTML report (:mod:`.report`)."""
from .vi import *  # noqa: F401,F403
from .vi import __all__ as _vi_all
from .compare import compare

__all__ = list(_vi_all) + ["compare"]
