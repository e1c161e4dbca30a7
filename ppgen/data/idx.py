"""Reader (and a small writer, for tests) of the IDX format used by MNIST and Fashion-MNIST."""
from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np
import torch

from .base import Dataset, as_dataset, check_tensor
from .files import check_fits_in_memory, existing_file, reading, refuse_special

#: What to do when a file is not IDX: the formats ``ppgen.data.load`` reads.
FORMATS_HINT = ("ppgen reads IDX files (MNIST format, optionally gzipped) or a folder of them, "
                ".npy/.npz arrays, and .mat/.pickle piano rolls")

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(">i2"): 0x0B,
          np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}


def _open(path: Path):
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gz else open(path, "rb")


def read_idx(path) -> np.ndarray:
    """Read one IDX file (gzipped or not) into an array of its stored shape and dtype."""
    path = existing_file(path, "IDX file")
    with reading(path, "IDX file", FORMATS_HINT), _open(path) as f:
        raw = f.read(4)
        if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
            empty = " (the file is empty)" if not raw else f" (bad magic number {raw[:4].hex()})"
            raise ValueError(f"{path} is not an IDX file{empty}; {FORMATS_HINT}")
        ndim = raw[3]
        dims = f.read(4 * ndim)
        if len(dims) < 4 * ndim:
            raise ValueError(f"{path} ends inside its IDX header; the file is truncated: download or write it again")
        shape = tuple(int.from_bytes(dims[4 * i: 4 + 4 * i], "big") for i in range(ndim))
        dtype = np.dtype(_DTYPES[raw[2]])
        expected = math.prod(shape) * dtype.itemsize
        # the header's size, before a gzipped body is decompressed
        check_fits_in_memory(expected, f"{path} (shape {shape} of {dtype})",
                             "IDX files are read whole: save the images with numpy.save and train on --data stream:PATH")
        body = f.read(expected + 1)  # one byte more: a longer file is damaged too
    if len(body) != expected:
        follow = f"more than {expected}" if len(body) > expected else len(body)
        raise ValueError(f"{path}: header says shape {shape} ({expected} bytes) but {follow} bytes follow; "
                         "the file is truncated or damaged: download or write it again")
    return np.frombuffer(body, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path, array: np.ndarray, compress: bool | None = None) -> Path:
    """Write ``array`` as an IDX file (gzipped when the name ends in .gz)."""
    path = Path(path)
    array = np.asarray(array)
    big = array.astype(array.dtype.newbyteorder(">")) if array.dtype.itemsize > 1 else array
    code = _CODES.get(np.dtype(big.dtype).newbyteorder(">") if big.dtype.itemsize > 1 else big.dtype)
    if code is None:
        raise TypeError(f"IDX cannot store dtype {array.dtype}")
    header = bytes([0, 0, code, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    data = header + big.tobytes()
    compress = path.suffix == ".gz" if compress is None else compress
    with (gzip.open(path, "wb") if compress else open(path, "wb")) as f:
        f.write(data)
    return path


_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "train_labels": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "test_labels": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}


def _find(directory: Path, key: str) -> Path | None:
    for stem in _NAMES[key]:
        for suffix in ("", ".gz"):
            p = directory / (stem + suffix)
            if p.is_file():
                return p
    return None


def load_idx(path, binarize: bool = True, val_fraction: float = 1 / 6) -> Dataset:
    """MNIST-format data from a directory holding ``train-images-idx3-ubyte[.gz]`` and
    ``t10k-images-idx3-ubyte[.gz]`` (labels optional), or from a single images file (split
    by a seeded permutation). ``binarize=True`` thresholds at 128 (Bernoulli likelihood);
    otherwise pixels are scaled to [0, 1] (continuous Bernoulli)."""
    path = Path(path).expanduser()
    refuse_special(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file or directory: {path}")
    with reading(path, "IDX file", FORMATS_HINT):
        return _load_idx(path, binarize, val_fraction)


def _load_idx(path: Path, binarize: bool, val_fraction: float) -> Dataset:
    def images(p):
        a = read_idx(p)
        if a.ndim != 3:
            raise ValueError(f"{p}: expected images [N, H, W], got shape {a.shape}")
        x = torch.from_numpy(a.astype(np.float32))
        return (x >= 128).float() if binarize else x / 255.0

    kind = "bernoulli" if binarize else "continuous_bernoulli"
    if path.is_file():
        return as_dataset(images(path), name=path.name.split(".")[0], likelihood=kind, val_fraction=0.1)
    train_p, test_p = _find(path, "train"), _find(path, "test")
    if train_p is None or test_p is None:
        found = sorted(p.name for p in path.iterdir())[:8]
        raise FileNotFoundError(
            f"{path} must contain train-images-idx3-ubyte[.gz] and t10k-images-idx3-ubyte[.gz] (MNIST layout); "
            f"it holds {found or 'nothing'}; {FORMATS_HINT}"
        )
    train, test = images(train_p), images(test_p)
    n_val = max(1, int(round(train.shape[0] * val_fraction)))
    labels = None
    tl, sl = _find(path, "train_labels"), _find(path, "test_labels")
    if tl is not None and sl is not None:
        ytr = torch.from_numpy(read_idx(tl).astype(np.int64))
        labels = {"train": ytr[:-n_val], "val": ytr[-n_val:], "test": torch.from_numpy(read_idx(sl).astype(np.int64))}
    shape = (1, *train.shape[1:])
    flat = lambda t: check_tensor(t.reshape(t.shape[0], -1), "IDX images")  # noqa: E731
    return Dataset(path.name, flat(train[:-n_val]), flat(train[-n_val:]), flat(test), kind, {}, shape, labels)
