"""Atomic, safe checkpoints and the RNG state that makes resumed runs continue exactly."""
from __future__ import annotations

import os
import pickle
import random
import tempfile
import zipfile
from pathlib import Path
from typing import Callable

import torch


def atomic_write(path, write: Callable, *, mode: str = "wb") -> Path:
    """Write ``path`` through ``write(file)`` into a temporary file in the same directory,
    fsync, then rename it over ``path``: a crash or Ctrl-C mid-write never leaves a truncated
    file, and the old one stays until the new one is complete. The file gets the permissions
    of any new file (0666 less the umask), not the temporary file's 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, new_file_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def save_atomic(path, obj) -> Path:
    """``torch.save`` through :func:`atomic_write`."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def load_checkpoint(path, map_location="cpu") -> dict:
    """Load a checkpoint with ``weights_only=True``: tensors and plain containers only, never
    arbitrary pickled objects. A damaged file or one holding other objects raises
    ``ValueError`` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(f"{path} holds objects other than tensors and plain containers; ppgen loads checkpoints "
                         "with weights_only=True and does not unpickle them (it is not a ppgen checkpoint)") from e
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path} is damaged or not a PyTorch checkpoint ({_first_line(e)}); "
                         "resume from a copy or train the run again") from e
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a ppgen checkpoint (it holds a {type(state).__name__}, not a dict)")
    return state


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def new_file_mode() -> int:
    """The permissions a new file gets: 0666 less the process umask."""
    mask = os.umask(0)  # the only portable way to read the umask is to set it
    os.umask(mask)
    return 0o666 & ~mask


def rng_state() -> dict:
    """Every RNG that training draws from: torch CPU, CUDA (when present) and Python's."""
    state = {"torch": torch.get_rng_state(), "python": _to_lists(random.getstate())}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"].cpu())
    random.setstate(_to_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _to_lists(x):
    return [_to_lists(v) for v in x] if isinstance(x, (tuple, list)) else x


def _to_tuples(x):
    return tuple(_to_tuples(v) for v in x) if isinstance(x, (tuple, list)) else x
