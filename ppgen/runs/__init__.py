"""Runs: a directory holding ``config.json``, ``checkpoint.pt``, ``metrics.json`` and figures,
made by ``ppgen train`` and read by ``ppgen eval``, ``sample``, ``report`` and ``quality``.
Every model family is a :class:`Family` in :data:`FAMILIES`."""
from .api import Run, eval_run, load_run, open_run, train_run
from .families import FAMILIES, family
from .family import Family
from .files import read_config, read_json, write_json

__all__ = ["FAMILIES", "Family", "family", "Run", "train_run", "open_run", "load_run", "eval_run", "read_config",
           "read_json", "write_json"]
