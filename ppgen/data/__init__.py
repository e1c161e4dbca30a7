"""Datasets with fixed splits, and checks that name what is wrong with bad data.

Every loader returns a :class:`Dataset` (train/val/test tensors plus the likelihood that
suits them). ``load(spec)`` turns a CLI-style string into one: a registry name
(``digits``), ``name:argument`` (``jsb:PATH``), or a path to IDX / ``.npy`` / ``.npz`` files.
"""
from __future__ import annotations

from pathlib import Path

from .base import Dataset, as_dataset, check_images, check_tensor, model_args
from .digits import load_digits
from .idx import load_idx, read_idx, write_idx
from .sprites import load_sprites
from .polyphonic import SequenceDataset, load_chorales, load_jsb, load_synthetic, transposed

DATASETS = {
    "digits": load_digits,
    "sprites": load_sprites,
    "jsb": load_jsb,
    "chorales": load_chorales,
    "synthetic": load_synthetic,
}


def load(spec: str, **kwargs) -> Dataset:
    """Load a dataset from a registry name, ``name:argument`` or a path."""
    name, _, arg = spec.partition(":")
    if name in DATASETS:
        return DATASETS[name](arg, **kwargs) if arg else DATASETS[name](**kwargs)
    path = Path(spec).expanduser()
    if path.exists():
        if path.suffix in (".npy", ".npz"):
            return _load_numpy(path)
        return load_idx(path, **kwargs)
    known = ", ".join(sorted(DATASETS))
    raise FileNotFoundError(f"no dataset named {spec!r} and no such file or directory (known datasets: {known})")


def _load_numpy(path: Path) -> Dataset:
    import numpy as np

    arrays = np.load(path)
    if path.suffix == ".npy":
        return as_dataset(arrays, name=path.stem)
    missing = {"train", "test"} - set(arrays.files)
    if missing:
        raise ValueError(f"{path} must hold arrays 'train' and 'test' (and optionally 'val'); missing {sorted(missing)}")
    return as_dataset(arrays["train"], val=arrays["val"] if "val" in arrays.files else None,
                      test=arrays["test"], name=path.stem)


__all__ = ["Dataset", "model_args", "SequenceDataset", "DATASETS", "as_dataset", "check_tensor", "check_images", "load", "load_digits", "transposed",
           "load_idx", "read_idx", "write_idx"]
