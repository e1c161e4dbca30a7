"""Partially labelled data: rows x with class labels, some of them missing, for
semi-supervised models such as Kingma et al. (2014)'s M2, ``model(x, y=None)`` with y
observed when given and latent otherwise.

Labels are stored as integer classes with :data:`MISSING` (-1) for an unknown label, the
form labels come in (``Dataset.labels``); :meth:`PartiallyLabelled.model_labels` turns them
into what the model takes: one-hot float rows ``[n, C]`` (as Pyro's ``OneHotCategorical``
site of its SS-VAE example wants them), or the integer classes themselves with
``one_hot=False`` (for a ``Categorical`` site).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

#: The label of a row whose class is unknown.
MISSING = -1


@dataclass(frozen=True)
class PartiallyLabelled:
    """Rows ``x [N, ...]`` and their class labels ``labels [N]`` (integers in
    ``0..num_classes-1``, :data:`MISSING` where unknown).

    :func:`ppgen.fit` splits each minibatch into its labelled rows, passed as
    ``model(x_l, y_l)`` / ``guide(x_l, y_l)``, and its unlabelled rows, passed as
    ``model(x_u)`` / ``guide(x_u)``; :func:`ppgen.evaluate` reports the accuracy of the
    guide's q(y | x) on the labelled rows. ``num_classes`` defaults to the largest label + 1.
    """

    x: torch.Tensor
    labels: torch.Tensor
    num_classes: int | None = None
    one_hot: bool = True

    def __post_init__(self):
        if not isinstance(self.x, torch.Tensor) or not isinstance(self.labels, torch.Tensor):
            raise TypeError(f"PartiallyLabelled takes tensors x and labels, got {type(self.x).__name__} and "
                            f"{type(self.labels).__name__}")
        if self.labels.dim() != 1 or self.labels.is_floating_point() or self.labels.dtype == torch.bool:
            raise ValueError(f"labels must be integer classes [N] with {MISSING} for a missing label, got "
                             f"{self.labels.dtype} of shape {tuple(self.labels.shape)}")
        if self.x.dim() == 0 or self.x.shape[0] != self.labels.shape[0]:
            raise ValueError(f"x has {self.x.shape[0] if self.x.dim() else 0} rows but labels {self.labels.shape[0]}")
        object.__setattr__(self, "labels", self.labels.long())
        top = int(self.labels.max()) if self.labels.numel() else -1
        if self.num_classes is None:
            object.__setattr__(self, "num_classes", top + 1)
        if self.labels.numel() and (int(self.labels.min()) < MISSING or top >= self.num_classes):
            raise ValueError(f"labels must lie in 0..{self.num_classes - 1} or be {MISSING} (missing), got "
                             f"{int(self.labels.min())}..{top}")

    @staticmethod
    def keep_fraction(x: torch.Tensor, labels: torch.Tensor, fraction: float, *, seed: int = 0,
                      num_classes: int | None = None, one_hot: bool = True) -> "PartiallyLabelled":
        """``x`` with the labels of a random ``fraction`` of the rows kept (the same share of
        every class, at least one row each) and the others marked missing."""
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        labels = labels.long()
        generator = torch.Generator().manual_seed(seed)
        kept = torch.full_like(labels, MISSING)
        for c in labels.unique():
            rows = (labels == c).nonzero().squeeze(1)
            take = rows[torch.randperm(len(rows), generator=generator)[:max(1, round(fraction * len(rows)))]]
            kept[take] = c
        return PartiallyLabelled(x, kept, num_classes or int(labels.max()) + 1, one_hot)

    @property
    def known(self) -> torch.Tensor:
        """Which rows have a label: a bool mask ``[N]``."""
        return self.labels != MISSING

    def __len__(self) -> int:
        return self.x.shape[0]

    def model_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """Known ``labels [n]`` as the model takes them: one-hot rows ``[n, C]`` in ``x``'s
        floating dtype, or the integer classes with ``one_hot=False``."""
        if not self.one_hot:
            return labels
        dtype = self.x.dtype if self.x.is_floating_point() else torch.get_default_dtype()
        return torch.nn.functional.one_hot(labels, self.num_classes).to(dtype)

    def split(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[tuple, tuple]:
        """A batch's rows as the model's arguments: ``((x_l, y_l), (x_u,))``, labelled and
        unlabelled (either may have no rows)."""
        known = labels != MISSING
        return (x[known], self.model_labels(labels[known])), (x[~known],)

    def labelled(self) -> tuple:
        """The labelled rows as the model's arguments ``(x_l, y_l)``."""
        return self.split(self.x, self.labels)[0]


__all__ = ["MISSING", "PartiallyLabelled"]
