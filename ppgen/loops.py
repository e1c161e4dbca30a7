"""Small pieces shared by the companion training loops (:mod:`ppgen.gan`,
:mod:`ppgen.deconv`): input checks, resume with a settings check, the non-finite stop."""
from __future__ import annotations

import math

import torch

from .checkpoint import load_checkpoint, set_rng_state


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
    data = data.float()
    if not torch.isfinite(data).all():
        raise ValueError(f"{what} contain non-finite values (NaN or inf)")
    if data.min() < 0 or data.max() > 1:
        raise ValueError(f"{what} must lie in [0, 1] (min {data.min().item():g}, max {data.max().item():g}); "
                         "rescale them first, e.g. divide digits counts by 16")
    return data


def load_for_resume(checkpoint, config: dict, device) -> dict:
    """The checkpoint's state, after checking that every setting but ``epochs`` matches."""
    if checkpoint is None:
        raise ValueError("resume=True needs a checkpoint path")
    state = load_checkpoint(checkpoint, map_location=device)
    saved = state["config"]
    changed = {k: (saved.get(k), v) for k, v in config.items() if k != "epochs" and saved.get(k) != v}
    if changed:
        raise ValueError("cannot resume: settings differ from the checkpoint's: "
                         + ", ".join(f"{k} was {a!r}, now {b!r}" for k, (a, b) in changed.items()))
    return state


def resume_from(checkpoint, config: dict, device, parts: dict) -> tuple[dict, int]:
    """Load every ``parts[key]`` (modules, optimizers) from the checkpoint's ``state[key]`` and
    restore the RNG streams; return the saved history and the epoch to continue from."""
    state = load_for_resume(checkpoint, config, device)
    for key, part in parts.items():
        part.load_state_dict(state[key])
    set_rng_state(state["rng"])
    return state["history"], state["epoch"]


def stop_if_not_finite(loss: torch.Tensor, what: str, epoch: int, step: int, checkpoint, last_epoch: int) -> None:
    """Raise ``RuntimeError`` for a NaN/inf loss; called before the update, so the last
    checkpoint written (after ``last_epoch``) is the last good state."""
    if torch.isfinite(loss):
        return
    where = (f"the last good checkpoint ({checkpoint}, epoch {last_epoch}) is intact" if checkpoint
             else "no checkpoint was requested")
    raise RuntimeError(f"non-finite {what} ({loss.item()}) at epoch {epoch + 1}, step {step + 1}; "
                       f"training stopped before the update; {where}")
