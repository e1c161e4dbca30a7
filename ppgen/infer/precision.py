"""Numeric precision of training: the one home of the autocast policy (``--precision``).

``"fp32"`` (the default) runs everything in float32, exactly as without this module.
``"bf16"`` runs the networks (encoders, decoders, recurrences, GAN nets) under
``torch.autocast`` in bfloat16, while every density stays float32: the network outputs that
parameterise a distribution are cast back to float32 before any ``log_prob``
(:func:`ppgen.nn.device.full_precision`, applied in the likelihoods, the Gaussian parameter
heads, the flows and the discriminator's logits), so the ELBO, its gradients' scale and the
logged loss are float32 sums. The backward pass and the optimiser step run outside autocast
(:func:`outside_autocast`), as torch recommends; weights and optimiser state stay float32.

bfloat16 has float32's exponent range, so no loss scaling is needed (float16 would need a
``GradScaler`` and is not offered). Evaluation (validation score, test bounds) runs in
float32 whatever the training precision, so reported nats do not depend on it.
"""
from __future__ import annotations

from contextlib import ExitStack, nullcontext

import torch

#: precision name -> the dtype autocast runs the networks in (None: no autocast, plain float32).
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}

#: device types whose autocast runs bfloat16 (CUDA: on GPUs that support it, checked below).
_BF16_DEVICES = ("cpu", "cuda")


def check_precision(precision: str, device: str | torch.device | None = None) -> None:
    """Raise ``ValueError`` naming the problem unless ``precision`` is a known name and, when
    ``device`` is given, the device can run it."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
    if device is None or PRECISIONS[precision] is None:
        return
    dev = torch.device(device)
    if dev.type not in _BF16_DEVICES:
        raise ValueError(f"precision {precision!r} needs a CPU or CUDA device; device {str(dev)!r} has no "
                         "bfloat16 autocast here: use --precision fp32")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"precision {precision!r} on device {str(dev)!r}: CUDA is not available on this machine")
        if not torch.cuda.is_bf16_supported():
            raise ValueError(f"precision {precision!r}: the GPU {torch.cuda.get_device_name(dev)!r} does not support "
                             "bfloat16 (it needs compute capability 8.0 or newer); use --precision fp32")


def autocast(device: str | torch.device, precision: str = "fp32"):
    """The context that a training step's forward pass runs in: a no-op for ``"fp32"``,
    ``torch.autocast(device type, bfloat16)`` for ``"bf16"``. Refuses an unknown name or a
    device that cannot run it (:func:`check_precision`), rather than silently running float32
    as ``torch.autocast`` itself does on a device without support."""
    check_precision(precision, device)
    dtype = PRECISIONS[precision]
    if dtype is None:
        return nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def outside_autocast():
    """Autocast switched off inside the block, on every device type where it is on (a no-op,
    costing nothing, where it is off, as in fp32 training): for the backward pass and the
    optimiser step, and for scoring densities whose own arithmetic would otherwise be
    autocast (a matmul inside a ``log_prob``, as in a low-rank Gaussian's)."""
    on = [kind for kind in _BF16_DEVICES if torch.is_autocast_enabled(kind)]
    if not on:
        return nullcontext()
    stack = ExitStack()
    for kind in on:
        stack.enter_context(torch.autocast(kind, enabled=False))
    return stack


__all__ = ["PRECISIONS", "check_precision", "autocast", "outside_autocast"]
