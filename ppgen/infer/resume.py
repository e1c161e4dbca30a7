"""Resume with a settings check, and the non-finite stop (shared by the training loops)."""
from __future__ import annotations

import torch

from .checkpoint import load_checkpoint, set_rng_state


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
