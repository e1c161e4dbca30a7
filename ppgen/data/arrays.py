"""Datasets from NumPy files: ``.npy`` (one array, split by :func:`as_dataset`) and ``.npz``
(arrays ``train``, ``test`` and optionally ``val``; or a single array, like ``.npy``).

Nothing is ever unpickled: the array header is read first, and an array of Python objects
(which NumPy stores as a pickle) is refused before its bytes are touched. The header's shape
and dtype also say how much memory the array takes: an array (or the arrays of an ``.npz``
together) larger than the memory available is refused before it is read or decompressed.
"""
from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np

from .base import Dataset, as_dataset
from .files import check_fits_in_memory, existing_file, reading

NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"
PICKLE_PROTOCOL = b"\x80"  # first byte of a binary pickle (protocol >= 2)
NPY_HINT = "save a numeric array with numpy.save(path, array)"
NPZ_HINT = "save numeric arrays with numpy.savez(path, train=..., test=..., val=...)"
#: What to do with an array larger than memory.
TOO_BIG_HINT = "save the rows with numpy.save(path, array) and train on --data stream:PATH, which reads them batch by batch"
_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def load_numpy(path) -> Dataset:
    """A dataset from a ``.npy`` or ``.npz`` file; what the file holds decides, not its name."""
    path = existing_file(path, "NumPy data file")
    with open(path, "rb") as f:
        head = f.read(len(NPY_MAGIC))
    kind = f"{path.suffix or 'NumPy'} file"
    if not head:
        raise ValueError(f"{path} is empty (0 bytes), not a valid {kind}; {NPY_HINT}")
    if head.startswith(ZIP_MAGIC):
        with reading(path, ".npz file", NPZ_HINT):
            return _from_arrays(path, _read_npz(path))
    if head.startswith(NPY_MAGIC):
        with reading(path, ".npy file", NPY_HINT):
            return as_dataset(_read_npy_file(path), name=path.stem)
    if head.startswith(PICKLE_PROTOCOL):
        raise ValueError(f"{path} is a Python pickle, not a .npy file; ppgen never unpickles data files "
                         f"(unpickling can run arbitrary code); {NPY_HINT}")
    raise ValueError(f"{path} is not a valid {kind}: it does not start with the NumPy header "
                     f"({NPY_MAGIC!r}) or a zip signature (.npz); {NPY_HINT}")


def _read_header(f, where: str) -> tuple:
    """(shape, fortran_order, dtype) from a .npy header; refuses what is not real numbers."""
    version = np.lib.format.read_magic(f)
    if version not in _HEADER_READERS:
        raise ValueError(f"{where}: .npy format version {version[0]}.{version[1]} holds a structured array; "
                         "ppgen needs a plain numeric array")
    shape, fortran, dtype = _HEADER_READERS[version](f)
    if dtype.hasobject:
        raise ValueError(f"{where} holds an array of Python objects (stored as a pickle); ppgen refuses to "
                         "unpickle data (it can run arbitrary code) and needs numbers: convert with "
                         "np.asarray(x, dtype=float) and save again")
    if dtype.kind == "c":
        raise TypeError(f"{where} holds complex numbers ({dtype}); ppgen models real values: save the real "
                        "part, or real and imaginary parts as separate features")
    if dtype.kind not in "biuf":
        raise TypeError(f"{where} holds dtype {dtype}, not numbers; save a bool, integer or float array")
    return shape, fortran, dtype


def _read_npy_file(path: Path) -> np.ndarray:
    with open(path, "rb") as f:
        shape, _, dtype = _read_header(f, str(path))
        expected = int(np.prod(shape)) * dtype.itemsize
        present = path.stat().st_size - f.tell()
        if present < expected:
            raise ValueError(f"{path} is truncated: its header says shape {tuple(shape)} of {dtype} "
                             f"({expected} bytes) but only {present} bytes follow; write the file again")
        check_fits_in_memory(expected, f"{path} (shape {tuple(shape)} of {dtype})", TOO_BIG_HINT)
        f.seek(0)
        return np.lib.format.read_array(f, allow_pickle=False)


def _read_npz(path: Path) -> dict:
    """Every array of an .npz archive by name (``x.npy`` -> ``x``), every header checked (and
    the declared sizes against the memory available) before any array is decompressed."""
    arrays = {}
    with zipfile.ZipFile(path) as archive:
        members = {member.removesuffix(".npy"): member for member in archive.namelist()}
        total = 0
        for name, member in members.items():
            with archive.open(member) as f:
                shape, _, dtype = _read_header(f, f"{path} (array {name!r})")
            nbytes = math.prod(shape) * dtype.itemsize
            check_fits_in_memory(nbytes, f"{path} (array {name!r}: shape {tuple(shape)} of {dtype})", TOO_BIG_HINT)
            total += nbytes
        if len(members) > 1:
            check_fits_in_memory(total, f"{path} ({len(members)} arrays together)", TOO_BIG_HINT)
        for name, member in members.items():
            with archive.open(member) as f:
                arrays[name] = np.lib.format.read_array(f, allow_pickle=False)
    return arrays


def _from_arrays(path: Path, arrays: dict) -> Dataset:
    if len(arrays) == 1:
        (x,) = arrays.values()
        return as_dataset(x, name=path.stem)
    missing = {"train", "test"} - set(arrays)
    if missing:
        raise ValueError(f"{path} must hold arrays 'train' and 'test' (and optionally 'val'), or a single "
                         f"array; it holds {sorted(arrays)}, missing {sorted(missing)}; {NPZ_HINT}")
    return as_dataset(arrays["train"], val=arrays.get("val"), test=arrays["test"], name=path.stem)
