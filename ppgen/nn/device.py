"""Device choice: ``"auto"`` means CUDA when present; everything else follows the data."""
from __future__ import annotations

import torch


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available on this machine")
    try:
        return torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"unknown device {device!r}; use auto, cpu or cuda") from e


#: Floating dtypes that autocast runs networks in; densities are never scored in them.
LOW_PRECISION = (torch.bfloat16, torch.float16)


def full_precision(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float32 when it is a low-precision float (what a network returns under
    ``--precision bf16``), unchanged otherwise: the one cast between a network's outputs and
    the distribution they parameterise, so log-densities and the ELBO stay float32. Under
    fp32 it returns ``t`` itself (no op, bit-identical), and a float64 model stays float64."""
    return t.float() if t.dtype in LOW_PRECISION else t
