"""The Dataset container and the input checks shared by every loader."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .labels import PartiallyLabelled


@dataclass
class Dataset:
    """Flat data vectors ``[N, x_dim]`` with fixed train/val/test splits.

    ``likelihood`` names the default p(x|z) in :data:`ppgen.likelihoods.LIKELIHOODS` that
    suits these values, with ``likelihood_kwargs``; ``image_shape`` (C, H, W) says how to
    show or convolve a vector; ``labels`` holds optional per-split labels or factors.
    """

    name: str
    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    likelihood: str = "normal"
    likelihood_kwargs: dict = field(default_factory=dict)
    image_shape: tuple | None = None
    labels: dict | None = None

    @property
    def x_dim(self) -> int:
        return int(self.train.shape[-1])

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, train={tuple(self.train.shape)}, val={tuple(self.val.shape)}, "
                f"test={tuple(self.test.shape)}, likelihood={self.likelihood!r}, image_shape={self.image_shape})")


def model_args(data) -> tuple:
    """The model's arguments from ``data``: a tensor (one argument) or a tuple/list of them,
    each with the datapoints on its first dimension; a :class:`~ppgen.data.labels.PartiallyLabelled`
    gives ``(x,)``, the rows without their labels (what log p(x) and the diagnostics are of).
    The first argument is the data values: stored as bool, integers or half precision (or
    given as a numpy array), it is converted as :func:`as_dataset` converts data
    (:func:`data_values`); float32/float64 data, which a model may be written in, and the
    other arguments (masks, labels, lengths, covariates) are passed as given."""
    if isinstance(data, PartiallyLabelled):
        data = (data.x,)
    args = tuple(data) if isinstance(data, (tuple, list)) else (data,)
    return (data_values(args[0], keep_float=True), *args[1:]) if args else args


def first_rows(data, n: int | None) -> tuple:
    """The model's arguments (:func:`model_args`) of the first ``n`` datapoints; all of them
    with ``n`` None."""
    args = model_args(data)
    return args if n is None else tuple(t[:n] for t in args)


def data_values(x, what: str = "data", *, keep_float: bool = False):
    """``x`` (a tensor or numpy array of real numbers, see :func:`real_tensor`) in the model's
    dtype, ``torch.get_default_dtype()``: the one conversion rule of data. With
    ``keep_float``, float32 and float64 tensors are kept as they are (a user's model may
    compute in either) and only storage types (bool, integers, float16/bfloat16) convert.
    Anything that is neither a tensor nor an array is returned as it is."""
    if not isinstance(x, (torch.Tensor, np.ndarray)):
        return x
    x = real_tensor(x, what)
    if x.dtype == torch.get_default_dtype() or (keep_float and x.dtype in (torch.float32, torch.float64)):
        return x
    return x.to(torch.get_default_dtype())


def real_tensor(x, what: str = "data") -> torch.Tensor:
    """``x`` (numpy array or tensor of real numbers: bool, any integer or float width) as a
    tensor in a dtype that torch computes with, values unchanged; complex, object, string,
    datetime or structured data raise ``TypeError``. Not yet converted to the model's dtype,
    so integer counts stay exactly integer for :func:`guess_likelihood`."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(_torch_compatible(x, what)))
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor or numpy array, got {type(x).__name__}")
    if x.is_complex():
        raise TypeError(f"{what} must be real-valued, got complex dtype {x.dtype}; "
                        "pass the real part, or real and imaginary parts as separate features")
    if x.dtype == torch.bool:
        return x.to(torch.uint8)
    if x.dtype in _WIDE_UNSIGNED:  # torch has few kernels for uint16/32/64: widen exactly
        return x.to(_WIDE_UNSIGNED[x.dtype])
    return x


#: Unsigned integer dtypes torch stores but barely computes with, and the exact wider type used.
_WIDE_UNSIGNED = {torch.uint16: torch.int32, torch.uint32: torch.int64, torch.uint64: torch.float64}


def _torch_compatible(a: np.ndarray, what: str) -> np.ndarray:
    """A numpy array of real numbers in native byte order and a dtype torch.from_numpy takes."""
    kind = a.dtype.kind
    if kind == "c":
        raise TypeError(f"{what} must be real-valued, got complex dtype {a.dtype}; "
                        "pass the real part, or real and imaginary parts as separate features")
    if kind not in "biuf":
        # object arrays would be Python objects, not numbers; strings, dates and records likewise
        raise TypeError(f"{what} must be numeric (bool, integer or float), got dtype {a.dtype}")
    if not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))
    if kind == "f" and a.dtype.itemsize > 8:  # long double: torch stops at float64
        a = a.astype(np.float64)
    return a


def check_tensor(x, what: str = "data", rank: int | None = 2) -> torch.Tensor:
    """``x`` as a tensor of the model's dtype (``torch.get_default_dtype()``) after checking
    type, rank, emptiness and finiteness; any real numeric dtype is accepted."""
    x = checked_values(x, what, rank)
    return x.to(torch.get_default_dtype())


def checked_values(x, what: str = "data", rank: int | None = 2) -> torch.Tensor:
    """Like :func:`check_tensor` but keeping the values' own dtype (see :func:`real_tensor`)."""
    x = real_tensor(x, what)
    if rank is not None and x.dim() != rank:
        raise ValueError(f"{what} must have {rank} dimensions [N, features], got shape {tuple(x.shape)}")
    if x.numel() == 0 or x.shape[0] == 0:
        raise ValueError(f"{what} is empty (shape {tuple(x.shape)})")
    if x.is_floating_point() and not torch.isfinite(x).all():
        raise ValueError(f"{what} contains {(~torch.isfinite(x)).sum().item()} non-finite values (NaN or inf); "
                         "drop or impute them first")
    return x


def guess_likelihood(x: torch.Tensor) -> tuple[str, dict]:
    """The default p(x|z) for values: binary -> Bernoulli, small integers -> categorical,
    [0, 1] -> continuous Bernoulli, anything else -> Normal. ``x`` may be of any real dtype
    (call it before converting to the model's dtype, so that counts are judged exactly)."""
    is_int = not x.is_floating_point() or bool((x == x.round()).all())
    lo, hi = x.min().item(), x.max().item()
    if is_int and lo >= 0 and hi <= 1:
        return "bernoulli", {}
    if is_int and lo >= 0 and hi <= 255:
        return "categorical", {"levels": int(hi) + 1}
    if lo >= 0 and hi <= 1:
        return "continuous_bernoulli", {}
    return "normal", {}


def as_dataset(train, val=None, test=None, *, name: str = "array", likelihood: str | None = None,
               image_shape: tuple | None = None, val_fraction: float = 0.1,
               test_fraction: float = 0.1, seed: int = 0) -> Dataset:
    """Wrap user arrays (numpy or torch, any real dtype; stored in the model's dtype,
    ``torch.get_default_dtype()``). Images ``[N, H, W]`` or ``[N, C, H, W]`` are flattened (their shape is
    kept in ``image_shape``). Missing val/test splits are cut from ``train`` by a seeded
    permutation."""
    train = _flatten(train, "train data")
    if image_shape is None and train[1] is not None:
        image_shape = train[1]
    train = train[0]
    if val is None or test is None:
        n = train.shape[0]
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        n_test = 0 if test is not None else max(1, int(round(n * test_fraction)))
        n_val = 0 if val is not None else max(1, int(round(n * val_fraction)))
        if n - n_test - n_val < 1:
            raise ValueError(f"train data with {n} rows is too small to cut validation and test splits from")
        if test is None:
            test = train[perm[:n_test]]
        if val is None:
            val = train[perm[n_test:n_test + n_val]]
        train = train[perm[n_test + n_val:]]
    val = _flatten(val, "validation data")[0]
    test = _flatten(test, "test data")[0]
    for split, t in (("validation", val), ("test", test)):
        if t.shape[1] != train.shape[1]:
            raise ValueError(f"{split} data have {t.shape[1]} features but train data have {train.shape[1]}")
    kind, kwargs = (likelihood, {}) if likelihood else guess_likelihood(torch.cat([train, val, test]))
    # the one conversion to the model's dtype, after the guess has seen the exact values
    return Dataset(name, data_values(train), data_values(val), data_values(test), kind, kwargs, image_shape)


def _flatten(x, what):
    x = checked_values(x, what, rank=None)
    if x.dim() == 2:
        return x, None
    if x.dim() == 3:
        return x.reshape(x.shape[0], -1), (1, *x.shape[1:])
    if x.dim() == 4:
        return x.reshape(x.shape[0], -1), tuple(x.shape[1:])
    hint = "; a single feature per row needs shape [N, 1] (x.reshape(-1, 1))" if x.dim() == 1 else ""
    raise ValueError(f"{what} must be [N, features], [N, H, W] or [N, C, H, W]; got shape {tuple(x.shape)}{hint}")


def check_images(data, image_shape: tuple, what: str = "data") -> torch.Tensor:
    """Flat float images ``[N, C*H*W]`` with values in [0, 1], or a clear ``ValueError``."""
    if not isinstance(data, torch.Tensor) or data.dim() != 2:
        got = tuple(data.shape) if isinstance(data, torch.Tensor) else type(data).__name__
        raise ValueError(f"{what} must be a tensor of flat images [N, C*H*W], got {got}")
    d = math.prod(image_shape)
    if data.shape[0] == 0:
        raise ValueError(f"{what} is empty")
    if data.shape[1] != d:
        raise ValueError(f"{what} have {data.shape[1]} features but image_shape {tuple(image_shape)} needs {d}")
    data = real_tensor(data, what).to(torch.get_default_dtype())
    if not torch.isfinite(data).all():
        raise ValueError(f"{what} contain non-finite values (NaN or inf)")
    if data.min() < 0 or data.max() > 1:
        raise ValueError(f"{what} must lie in [0, 1] (min {data.min().item():g}, max {data.max().item():g}); "
                         "rescale them first, e.g. divide digits counts by 16")
    return data
