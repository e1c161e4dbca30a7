"""The classifier inside a semi-supervised pair: q(y | x), the guide's distribution of the
label site, judged on labelled held-out rows (:class:`ppgen.data.PartiallyLabelled`).

The label site is found from the traces, not by name: it is the site observed in
``model(x, y)`` and latent in ``model(x)`` (:func:`ppgen.guides.sites.label_site`).
"""
from __future__ import annotations

import pyro
import torch

from ..data.labels import PartiallyLabelled
from ..guides.sites import label_site, trace_program
from ..nn import eval_mode


@torch.no_grad()
def classifier_accuracy(model, guide, data: PartiallyLabelled, batch_size: int = 1024) -> dict:
    """``{"test_accuracy": share, "label_site": name, "labelled": n}``: how often the most
    probable value of q(y | x_n), the guide run on x_n alone, is the label of x_n, over the
    labelled rows of ``data``. The most probable value is found over the site's support
    (``enumerate_support``), so any discrete site works: one-hot or integer classes."""
    x, y = data.labelled()
    if x.shape[0] == 0:
        raise ValueError("classifier accuracy needs labelled rows; every label of the data is missing")
    with eval_mode(model, guide), pyro.validation_enabled(False):
        site = label_site(model, x[:2], y[:2])
        correct = 0
        for i in range(0, x.shape[0], batch_size):
            xb, yb = x[i:i + batch_size], y[i:i + batch_size]
            nodes = trace_program(guide, xb).nodes
            if site not in nodes:
                raise ValueError(f"guide {getattr(guide, '__name__', type(guide).__name__)} run on x alone has no site "
                                 f"{site!r}, the model's label: it cannot classify")
            q = nodes[site]["fn"]  # q(y | x), y sampled in this run
            support = q.enumerate_support(expand=False)  # [C, 1.., *event]
            event = q.event_shape
            scores = q.log_prob(support).reshape(support.shape[0], -1)  # [C, n]
            values = support.reshape(support.shape[0], *event)
            predicted = values[scores.argmax(0)]  # [n, *event]
            hit = (predicted == yb.to(predicted.dtype)).reshape(xb.shape[0], -1).all(-1)
            correct += int(hit.sum())
    return {"test_accuracy": correct / x.shape[0], "label_site": site, "labelled": int(x.shape[0])}


__all__ = ["classifier_accuracy"]
