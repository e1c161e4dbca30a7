"""Runs: a directory holding ``config.json``, ``checkpoint.pt``, ``metrics.json`` and figures,
made by ``ppgen train`` and read by ``ppgen eval``, ``sample``, ``report`` and ``quality``."""
from .api import RUNNERS, eval_run, load_run, runner, train_run
from .files import read_config, read_json, write_json

__all__ = ["RUNNERS", "train_run", "load_run", "eval_run", "runner", "read_config", "read_json", "write_json"]
