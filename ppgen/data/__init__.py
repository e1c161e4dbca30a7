"""Datasets with fixed splits, and checks that name what is wrong with bad data.

Every loader returns a :class:`Dataset` (train/val/test tensors plus the likelihood that
suits them). ``load(spec)`` turns a CLI-style string into one: a registry name
(``digits``), ``name:argument`` (``jsb:PATH``), or a path to IDX / ``.npy`` / ``.npz`` /
``.mat`` files; ``stream:PATH`` reads ``.npy`` files larger than memory batch by batch
(:mod:`ppgen.data.stream`). A bad file raises one ``FileNotFoundError``, ``ValueError`` or ``TypeError``
that names it (see :mod:`ppgen.data.files`), a FIFO, device or socket is refused before it is
opened, and an array larger than the memory available before it is read;
:func:`resolve_spec` makes a spec location-free.
"""
from __future__ import annotations

import os
from pathlib import Path

from .arrays import load_numpy
from .base import Dataset, as_dataset, check_images, check_tensor, model_args
from .digits import load_digits
from .files import refuse_special
from .labels import MISSING, PartiallyLabelled
from .idx import load_idx, read_idx, write_idx
from .sprites import load_sprites
from .stream import MappedRows, load_stream
from .polyphonic import SequenceDataset, load_chorales, load_jsb, load_polyphonic, load_synthetic, transposed

DATASETS = {
    "digits": load_digits,
    "sprites": load_sprites,
    "jsb": load_jsb,
    "chorales": load_chorales,
    "synthetic": load_synthetic,
    "stream": load_stream,
}

#: Registry datasets whose ``name:argument`` argument is a file or folder (jsb's .mat file,
#: chorales' cache folder, the .npy file or folder that stream reads): :func:`resolve_spec` makes it absolute.
PATH_ARGUMENTS = frozenset({"jsb", "chorales", "stream"})

#: Loaders of a dataset file by its suffix; any other file or a folder is read as IDX.
FILE_LOADERS = {
    ".npy": load_numpy,
    ".npz": load_numpy,
    ".mat": load_polyphonic,
    ".pickle": load_polyphonic,
    ".pkl": load_polyphonic,
}


def load(spec: str, **kwargs) -> Dataset:
    """Load a dataset from a registry name, ``name:argument`` or a path (``.npy``/``.npz``
    arrays, ``.mat``/``.pickle`` piano rolls, or IDX files / a folder of them)."""
    name, _, arg = spec.partition(":")
    if name in DATASETS:
        return DATASETS[name](arg, **kwargs) if arg else DATASETS[name](**kwargs)
    path = Path(spec).expanduser()
    refuse_special(path)  # a FIFO would block the loader's open()
    if path.exists():
        return FILE_LOADERS.get(path.suffix.lower(), load_idx)(path, **kwargs)
    known = ", ".join(sorted(DATASETS))
    where = "" if path.is_absolute() else f" ({path.absolute()})"
    raise FileNotFoundError(f"no dataset named {spec!r} and no such file or directory{where} "
                            f"(known datasets: {known}; files: .npy, .npz, .mat, .pickle, IDX)")


def load_vectors(spec: str, **kwargs) -> Dataset:
    """:func:`load` for models of flat vectors ``[N, features]``: a clear ``ValueError`` when
    ``spec`` names sequence data (piano rolls), which only sequence models take."""
    dataset = load(spec, **kwargs)
    if isinstance(dataset, SequenceDataset):
        raise ValueError(f"{spec!r} holds sequences ({dataset!r}); this model takes flat vectors "
                         "[N, features]: use a sequence model (ppgen train vrnn) or an array file")
    return dataset


def load_in_memory(spec: str, **kwargs) -> Dataset:
    """:func:`load_vectors` for models that train outside :func:`ppgen.fit` (the GAN, the
    VAE-GAN, the restoration nets): a clear ``ValueError`` for streamed data (``stream:PATH``),
    which only the Pyro pairs trained by ``fit`` read batch by batch."""
    dataset = load_vectors(spec, **kwargs)
    if isinstance(dataset.train, MappedRows):
        raise ValueError(f"{spec!r} is streamed data, which the Pyro pairs trained by fit read (vae, sparse_vae, "
                         "conv_vae); this model needs its data in memory: give the .npy path without 'stream:'")
    return dataset


def resolve_spec(spec: str) -> str:
    """``spec`` with any relative path made absolute (``~`` expanded), so that it loads the
    same data from any working folder: ``x.npy`` -> ``/abs/x.npy``, ``jsb:rel/J.mat`` ->
    ``jsb:/abs/rel/J.mat``; registry names and their other arguments (``digits``,
    ``sprites:64``, ``synthetic:real``) are returned unchanged. Nothing is checked to exist."""
    name, sep, arg = spec.partition(":")
    if name in DATASETS:
        return f"{name}:{_absolute(arg)}" if sep and arg and name in PATH_ARGUMENTS else spec
    return _absolute(spec)


def _absolute(path: str) -> str:
    # abspath, not resolve(): normalises '..' but keeps symlinks as the user named them
    return os.path.abspath(os.path.expanduser(path))


__all__ = ["Dataset", "model_args", "PartiallyLabelled", "MISSING", "SequenceDataset", "DATASETS", "FILE_LOADERS", "PATH_ARGUMENTS", "as_dataset",
           "check_tensor", "check_images", "load", "load_vectors", "load_in_memory", "load_digits", "load_numpy", "load_stream", "MappedRows", "load_polyphonic", "resolve_spec",
           "transposed", "load_idx", "read_idx", "write_idx"]
