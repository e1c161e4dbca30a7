"""scikit-learn's bundled handwritten digits (8x8, counts 0..16; no download)."""
from __future__ import annotations

import torch

from .base import Dataset

#: The published split (see DESIGN.md): results on it compare with the ~96.5 nats textbook VAE.
TRAIN, VAL = slice(0, 1000), slice(1000, 1350)
TEST = slice(1350, None)


def load_digits() -> Dataset:
    """1797 images, x in {0..16}^64, split train[:1000] / val[1000:1350] / test[1350:].
    Default likelihood: 17-level categorical per pixel."""
    from sklearn.datasets import load_digits as _sk_digits

    bunch = _sk_digits()
    x = torch.tensor(bunch.data, dtype=torch.float32)
    y = torch.tensor(bunch.target, dtype=torch.long)
    return Dataset(
        "digits", x[TRAIN], x[VAL], x[TEST], "categorical", {"levels": 17}, (1, 8, 8),
        labels={"train": y[TRAIN], "val": y[VAL], "test": y[TEST]},
    )
