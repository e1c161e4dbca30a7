"""Procedural dSprites-like images: a square, an ellipse or a heart, rendered from five
independent generative factors (no download; numpy only).

Every image is one point of the factor grid ``shape x scale x rotation x pos_x x pos_y``
(sizes in :data:`FACTOR_SIZES`), so the ground-truth factors are known exactly and are
statistically independent over the full grid: the setting that disentanglement metrics
such as MIG (:func:`ppgen.companions.quality.mutual_information_gap`) assume.

Rotation is measured within each shape's symmetry period (90 degrees for the square, 180
for the ellipse, 360 for the heart), so distinct rotation indices give distinct images;
dSprites itself spans 360 degrees for every shape, which makes square rotations 0 and 90
the same picture with different labels.
"""
from __future__ import annotations

import numpy as np
import torch

from .base import Dataset

SHAPES = ("square", "ellipse", "heart")
FACTOR_NAMES = ("shape", "scale", "rotation", "pos_x", "pos_y")
FACTOR_SIZES = (3, 6, 8, 8, 8)
SIZES = (32, 64)

SCALES = np.linspace(0.5, 1.0, FACTOR_SIZES[1])
#: The rotation period of each shape, in radians (index ``r`` means ``r / R * period``).
PERIODS = (np.pi / 2, np.pi, 2 * np.pi)
#: Radius of a scale-1 sprite as a fraction of the image side (the shape fits in this disc).
RADIUS = 0.2


def _geometry(size: int) -> tuple[float, np.ndarray]:
    """Pixel radius at scale 1 and the centre coordinates that keep every sprite inside."""
    radius = RADIUS * size
    margin = 1.2 * radius * SCALES[-1]  # every shape stays within ~1.1 radius of its centre
    centres = np.linspace(margin, size - 1 - margin, FACTOR_SIZES[3]).astype(np.float32)
    return radius, centres


def _square(u, v):
    return np.maximum(np.abs(u), np.abs(v)) <= 0.75


def _ellipse(u, v):
    return u ** 2 + (v / 0.55) ** 2 <= 1.0


def _heart(u, v):
    # the implicit heart curve (x^2 + y^2 - 1)^3 = x^2 y^3, flipped so that it points down
    # and shrunk so that it fits the same disc as the other shapes
    hx, hy = 1.2 * u, -1.2 * v + 0.1
    return (hx ** 2 + hy ** 2 - 1) ** 3 - hx ** 2 * hy ** 3 <= 0


#: Inside tests in local coordinates (unit = sprite radius, v pointing down), by shape index.
INSIDE = (_square, _ellipse, _heart)


def render(factors: np.ndarray, size: int = 32, chunk: int = 2048) -> np.ndarray:
    """Binary images ``[N, size, size]`` (float32, 0/1) for integer factors ``[N, 5]``."""
    _check_size(size)
    factors = np.asarray(factors, dtype=np.int64).reshape(-1, len(FACTOR_NAMES))
    high = np.array(FACTOR_SIZES)
    if (factors < 0).any() or (factors >= high).any():
        raise ValueError(f"factors must lie in 0..size-1 for sizes {dict(zip(FACTOR_NAMES, FACTOR_SIZES))}")
    radius, centres = _geometry(size)
    grid = np.arange(size, dtype=np.float32)
    out = np.empty((len(factors), size, size), dtype=np.float32)
    for start in range(0, len(factors), chunk):
        block = factors[start:start + chunk]
        for shape, inside in enumerate(INSIDE):
            rows = np.flatnonzero(block[:, 0] == shape)
            f = block[rows]
            r = (radius * SCALES[f[:, 1]]).astype(np.float32)[:, None, None]
            angle = (f[:, 2] / FACTOR_SIZES[2] * PERIODS[shape]).astype(np.float32)[:, None, None]
            dx = grid[None, None, :] - centres[f[:, 3]][:, None, None]
            dy = grid[None, :, None] - centres[f[:, 4]][:, None, None]
            cos, sin = np.cos(angle), np.sin(angle)
            out[start + rows] = inside((cos * dx + sin * dy) / r, (cos * dy - sin * dx) / r)
    return out


def sprite_image(shape: int, scale: int, rotation: int, x: int, y: int, size: int = 32) -> np.ndarray:
    """One binary image ``[size, size]`` from factor indices (``shape`` indexes :data:`SHAPES`)."""
    return render(np.array([[shape, scale, rotation, x, y]]), size)[0]


def all_factors() -> np.ndarray:
    """Every factor combination, ``[prod(FACTOR_SIZES), 5]``, in row-major grid order."""
    axes = np.meshgrid(*[np.arange(s) for s in FACTOR_SIZES], indexing="ij")
    return np.stack([a.ravel() for a in axes], axis=1)


def load_sprites(size: int | str = 32, n: int | None = None, seed: int = 0) -> Dataset:
    """Binary sprite images with a Bernoulli likelihood and their factors as labels.

    ``n=None`` takes every grid point once (``prod(FACTOR_SIZES)`` = 9216 images); a smaller
    ``n`` draws that many distinct grid points with ``seed``. The split is 80/10/10 by a
    permutation seeded with ``seed``. ``labels[split]`` is a LongTensor ``[N, 5]`` in the order
    of :data:`FACTOR_NAMES`.

    At 32x32 pixel quantisation makes some neighbouring scales or rotations of small sprites
    render identically (44 of the 9216 grid points repeat another's image); at 64x64 every
    grid point is a distinct image. ``size`` may be a string (``load("sprites:64")``).
    """
    size = int(size) if isinstance(size, str) and size.isdigit() else size
    _check_size(size)
    grid = all_factors()
    rng = np.random.default_rng(seed)
    if n is None:
        n = len(grid)
    if not 10 <= n <= len(grid):
        raise ValueError(f"n must be between 10 and {len(grid)} (the size of the factor grid), got {n}")
    factors = grid[rng.permutation(len(grid))[:n]]
    images = render(factors, size).reshape(n, -1)
    n_val = n_test = n // 10
    cut = {"test": slice(0, n_test), "val": slice(n_test, n_test + n_val), "train": slice(n_test + n_val, n)}
    x = torch.from_numpy(images)
    y = torch.from_numpy(factors)
    return Dataset(
        f"sprites{size}", x[cut["train"]], x[cut["val"]], x[cut["test"]], "bernoulli", {},
        (1, size, size), labels={split: y[s] for split, s in cut.items()},
    )


def _check_size(size: int) -> None:
    if size not in SIZES:
        raise ValueError(f"sprite image size must be one of {SIZES}, got size={size!r}")
