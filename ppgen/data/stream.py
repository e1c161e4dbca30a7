"""Data larger than memory: the rows of memory-mapped ``.npy`` files, read a minibatch at a
time, never loaded whole.

``load("stream:PATH")`` (:func:`load_stream`) gives a :class:`~ppgen.data.Dataset` whose
``train`` split is a :class:`MappedRows` (a ``torch.utils.data.Dataset`` over the files;
:class:`ppgen.infer.batches.Streamed` reads it through a ``DataLoader``) and whose ``val``
and ``test`` splits are ordinary tensors held in memory. ``PATH`` is

- one ``.npy`` file, or a folder of ``.npy`` shards (every shard with the same trailing
  shape and dtype; rows concatenated in file-name order): the validation and test splits
  are the last rows, ``test`` the very last (:func:`tail_split`: 10% each, at most
  :data:`MAX_HELD_OUT` rows, so that they fit in memory and are scored each epoch);
- or a folder holding ``train``, ``val`` and ``test``, each a ``.npy`` file or a folder of
  shards: the splits as given (``val`` and ``test`` are loaded into memory).

Streaming is asked for by the ``stream:`` prefix, never switched on by size: it changes how
the held-out rows are chosen (the end of the file, not a seeded random draw) and the
likelihood is guessed from a sample, so the user should know they have it.

Values are converted to the model's dtype (``torch.get_default_dtype()``) batch by batch;
images ``[N, H, W]`` or ``[N, C, H, W]`` are flattened to rows (their shape is kept as the
dataset's ``image_shape``). Non-finite values are found per batch by :func:`check_finite`
(and at load time in a sample and the held-out splits).

A FIFO, device or socket is refused before it is opened (opening a FIFO waits for a writer).
A file that shrinks while it is mapped would kill the process with a bus error on the next
read of a page past its new end (``SIGBUS``, which Python cannot catch), so every read first
compares the file's size (``fstat`` of the mapped file, one system call per file and batch)
with the size its header promised, and raises :class:`FileChangedError` instead. (A file cut
in the instant between that check and the copy can still fault: the check narrows the window,
only a copy of the data, not a map, could close it.)
"""
from __future__ import annotations

import math
import mmap
from pathlib import Path

import numpy as np
import torch

from .arrays import NPY_HINT, _read_header
from .base import Dataset, checked_values, guess_likelihood
from .files import reading, refuse_special

#: The most rows each of the validation and test splits cut from the end of streamed data.
MAX_HELD_OUT = 10_000
#: Rows from the start of each split that decide the likelihood (a sample: the whole training
#: split is never in memory; each batch is then checked against the model's support).
GUESS_ROWS = 2_000


class FileChangedError(ValueError):
    """A streamed file shrank after it was opened (truncated or rewritten in place): its rows
    can no longer be read, and mapping past its end would crash the process."""


class MappedRows(torch.utils.data.Dataset):
    """Rows ``start:stop`` of the concatenation of ``.npy`` files, memory-mapped and read by
    index: ``rows[idx]`` (an integer array, tensor or slice) gives a tensor ``[len(idx),
    features]`` in the model's dtype, rows in the order asked. The indices are read in sorted
    order (forward through each file) and put back; after each read the mapped pages are
    released (``madvise(MADV_DONTNEED)`` over the map), so the process's resident memory
    does not grow with the files: a read maps far more than its rows (the kernel maps whole
    page-cache folios around each fault, up to megabytes), and without the release one pass
    over a 4 GB file leaves 4 GB resident. The kernel's page cache keeps what it can, so
    reading again is a page fault, not disk I/O, when the file fits in RAM. The maps are opened lazily in each process, so DataLoader workers open their
    own. Before each read the mapped files' sizes are checked (:meth:`check_unchanged`).

    ``shape`` is ``(rows, features)``; ``to(device)`` returns the rows unmoved (they stay on
    disk; a training source moves each batch), so code that moves a dataset's splits works."""

    def __init__(self, paths, start: int = 0, stop: int | None = None):
        self.paths = tuple(Path(p) for p in paths)
        if not self.paths:
            raise ValueError("no .npy files to stream")
        headers = [_npy_layout(p) for p in self.paths]
        trailing = {shape[1:] for shape, _, _ in headers}
        dtypes = {dtype for _, dtype, _ in headers}
        if len(trailing) > 1 or len(dtypes) > 1:
            found = ", ".join(f"{p.name}: {tuple(s)} {d}" for p, (s, d, _) in zip(self.paths, headers))
            raise ValueError(f"the shards of {self.paths[0].parent} must share the trailing shape and dtype; "
                             f"found {found}")
        self.item_shape = next(iter(trailing))
        self.source_dtype = next(iter(dtypes))
        self._layouts = [(shape[0], offset) for shape, _, offset in headers]
        #: bytes each file must hold: its header and rows (a shorter file would fault when read)
        self._needed = [offset + math.prod(shape) * dtype.itemsize for shape, dtype, offset in headers]
        self._starts = np.cumsum([0] + [rows for rows, _ in self._layouts])  # first global row of each file
        total = int(self._starts[-1])
        stop = total if stop is None else stop
        if not 0 <= start <= stop <= total:
            raise ValueError(f"row range {start}:{stop} is outside the {total} rows of {self.where}")
        self.start, self.stop = start, stop
        self.features = math.prod(self.item_shape)
        self.dtype = torch.get_default_dtype()
        self._maps = None

    @property
    def where(self) -> str:
        return str(self.paths[0]) if len(self.paths) == 1 else f"{self.paths[0].parent} ({len(self.paths)} shards)"

    @property
    def floating(self) -> bool:
        """Whether the files hold floating-point values (the only ones that can be NaN or inf)."""
        return self.source_dtype.kind == "f"

    @property
    def shape(self) -> tuple:
        return (len(self), self.features)

    @property
    def image_shape(self) -> tuple | None:
        """(C, H, W) of image rows, None for flat vectors (as :func:`ppgen.data.as_dataset`)."""
        if len(self.item_shape) == 2:
            return (1, *self.item_shape)
        return tuple(self.item_shape) if len(self.item_shape) == 3 else None

    def __len__(self) -> int:
        return self.stop - self.start

    def __repr__(self) -> str:
        return f"MappedRows({self.where}, rows {self.start}:{self.stop}, shape={self.shape}, {self.source_dtype})"

    def to(self, device) -> "MappedRows":
        return self

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, slice):
            picked = range(len(self))[index]  # no index array of every row
            index = np.arange(picked.start, picked.stop, picked.step)
        rows = np.asarray(index.cpu() if isinstance(index, torch.Tensor) else index, dtype=np.int64)
        if rows.ndim != 1:
            raise IndexError(f"rows of {self.where} are read by a 1-d array of indices, got shape {rows.shape}")
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"row index out of range for the {len(self)} rows of {self}")
        order = np.argsort(rows, kind="stable")
        values = self._read_sorted(rows[order] + self.start)
        out = np.empty_like(values)
        out[order] = values  # back in the order asked
        return torch.from_numpy(out).reshape(len(rows), self.features)

    def read(self, start: int, stop: int) -> torch.Tensor:
        """Rows ``start:stop`` (of this range) as one tensor."""
        if not 0 <= start <= stop <= len(self):
            raise IndexError(f"rows {start}:{stop} are outside the {len(self)} rows of {self}")
        values = self._read_sorted(np.arange(start, stop) + self.start)  # already in order: no second copy
        return torch.from_numpy(values).reshape(stop - start, self.features)

    def check_unchanged(self) -> None:
        """:class:`FileChangedError` naming the first file that now holds fewer bytes than its
        header promised (by path: the mapped files of this process are checked at every read)."""
        for path, needed in zip(self.paths, self._needed):
            try:
                size = path.stat().st_size
            except OSError as e:
                raise FileChangedError(f"{path} can no longer be read ({e.strerror or e}); a streamed file must stay "
                                       "in place while it is read: restore it and resume from the last checkpoint") from None
            self._refuse_shrunk(path, size, needed)

    @staticmethod
    def _refuse_shrunk(path: Path, size: int, needed: int) -> None:
        if size < needed:
            raise FileChangedError(f"{path} changed while it was read: it now holds {size} bytes, fewer than the "
                                   f"{needed} its header promised; a streamed file must not be truncated or rewritten "
                                   "while it is read: restore it and resume from the last checkpoint")

    def _read_sorted(self, rows: np.ndarray) -> np.ndarray:
        """Global rows (sorted) of the files, converted to the model's dtype; each file's size
        is checked (``fstat`` of its map) before its rows are touched."""
        maps = self._open()
        out = np.empty((len(rows), *self.item_shape), dtype=torch.empty((), dtype=self.dtype).numpy().dtype)
        cuts = np.searchsorted(rows, self._starts)
        for f, (array, raw) in enumerate(maps):
            lo, hi = cuts[f], cuts[f + 1]
            if lo < hi:
                self._refuse_shrunk(self.paths[f], raw.size(), self._needed[f])  # mmap.size(): fstat of the mapped file
                out[lo:hi] = array[rows[lo:hi] - self._starts[f]]
                raw.madvise(mmap.MADV_DONTNEED)  # drop the pages from this process; the page cache keeps them
        return out

    def _open(self) -> list:
        if self._maps is None:
            self._maps = [_map_rows(path, rows, offset, self.item_shape, self.source_dtype)
                          for path, (rows, offset) in zip(self.paths, self._layouts)]
        return self._maps

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_maps": None}  # each process (DataLoader worker) maps the files itself


def check_finite(x: torch.Tensor, what: str) -> None:
    """``ValueError`` naming ``what`` if the floating tensor ``x`` holds NaN or inf."""
    if x.is_floating_point() and not torch.isfinite(x).all():
        raise ValueError(f"{what} contains {(~torch.isfinite(x)).sum().item()} non-finite values (NaN or inf); "
                         "drop or impute them first")


def load_stream(path=None) -> Dataset:
    """A dataset streamed from ``.npy`` files (see the module docstring for the layouts)."""
    if not path:
        raise ValueError("stream needs the .npy file or folder to read: --data stream:PATH")
    path = Path(path).expanduser()
    refuse_special(path)
    if not path.exists():
        where = "" if path.is_absolute() else f" (looked in {Path.cwd()})"
        raise FileNotFoundError(f"stream: no such .npy file or folder: {path}{where}")
    splits = _split_paths(path) if path.is_dir() else None
    if splits:
        train = MappedRows(splits["train"])
        val, test = (_held_in_memory(MappedRows(splits[s]), f"{s} split") for s in ("val", "test"))
    else:
        rows = MappedRows(_shards(path) if path.is_dir() else [path])
        n_train, n_val, _ = tail_split(len(rows), rows.where)
        train = MappedRows(rows.paths, 0, n_train)
        val = _held_in_memory(MappedRows(rows.paths, n_train, n_train + n_val), "validation rows")
        test = _held_in_memory(MappedRows(rows.paths, n_train + n_val), "test rows")
    if val.shape[1] != train.features or test.shape[1] != train.features:
        raise ValueError(f"the splits of {path} disagree on the features per row: train {train.features}, "
                         f"val {val.shape[1]}, test {test.shape[1]}")
    sample = train.read(0, min(len(train), GUESS_ROWS))
    check_finite(sample, f"the first {len(sample)} training rows of {train.where}")
    kind, kwargs = guess_likelihood(torch.cat([sample, val[:GUESS_ROWS], test[:GUESS_ROWS]]))
    return Dataset(path.stem or path.name, train, val, test, kind, kwargs, train.image_shape)


def tail_split(n: int, where: str = "the data") -> tuple[int, int, int]:
    """(train, val, test) row counts of ``n`` streamed rows: validation and test are the last
    rows, 10% each but at most :data:`MAX_HELD_OUT` and at least one."""
    held = min(MAX_HELD_OUT, max(1, round(0.1 * n)))
    if n - 2 * held < 1:
        raise ValueError(f"{where} has {n} rows, too few to cut validation and test rows from its end")
    return n - 2 * held, held, held


def _split_paths(folder: Path) -> dict | None:
    """``{split: [files]}`` of a folder laid out as train/val/test (``.npy`` files or shard
    folders), None for a plain folder of shards; a partial layout is an error."""
    found = {}
    for split in ("train", "val", "test"):
        refuse_special(folder / f"{split}.npy")
        if (folder / split).is_dir():
            found[split] = _shards(folder / split)
        elif (folder / f"{split}.npy").is_file():
            found[split] = [folder / f"{split}.npy"]
    if found and set(found) != {"train", "val", "test"}:
        raise ValueError(f"{folder} holds {sorted(found)} but not {sorted({'train', 'val', 'test'} - set(found))}: "
                         "a streamed folder with named splits needs all of train, val and test (each a .npy "
                         "file or a folder of .npy shards); or give a folder of shards only")
    return found or None


def _shards(folder: Path) -> list[Path]:
    shards = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".npy" and not p.is_dir())
    for p in shards:
        refuse_special(p)  # a FIFO among the shards is refused, not skipped
    if not shards:
        raise ValueError(f"{folder} holds no .npy files to stream; {NPY_HINT}")
    return shards


def _held_in_memory(rows: MappedRows, what: str) -> torch.Tensor:
    x = checked_values(rows.read(0, len(rows)), f"{what} of {rows.where}")
    return x.reshape(len(rows), -1)


def _npy_layout(path: Path) -> tuple:
    """(shape, dtype, data offset) of a C-ordered ``.npy`` file, its header and size checked."""
    refuse_special(path)
    with reading(path, ".npy file", NPY_HINT), open(path, "rb") as f:
        shape, fortran, dtype = _read_header(f, str(path))
        offset = f.tell()
    if fortran:
        raise ValueError(f"{path} is stored in Fortran (column) order; streaming reads rows: save it with "
                         "numpy.save(path, np.ascontiguousarray(array))")
    if len(shape) < 2 or len(shape) > 4:
        raise ValueError(f"{path} must hold rows [N, features], [N, H, W] or [N, C, H, W]; "
                         f"got shape {tuple(shape)}")
    expected = offset + math.prod(shape) * dtype.itemsize
    if path.stat().st_size < expected:
        raise ValueError(f"{path} is truncated: its header says shape {tuple(shape)} of {dtype} "
                         f"({expected - offset} bytes) but the file holds {path.stat().st_size - offset}; write it again")
    if shape[0] == 0:
        raise ValueError(f"{path} has no rows (shape {tuple(shape)})")
    return tuple(shape), dtype, offset


def _map_rows(path: Path, rows: int, offset: int, item_shape: tuple, dtype: np.dtype) -> tuple:
    """(array view of the file's rows, its mmap) without reading them."""
    with open(path, "rb") as f:
        raw = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    array = np.ndarray((rows, *item_shape), dtype=dtype, buffer=raw, offset=offset)
    return array, raw


__all__ = ["MappedRows", "FileChangedError", "load_stream", "tail_split", "check_finite", "MAX_HELD_OUT", "GUESS_ROWS"]
