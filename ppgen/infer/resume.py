"""The one check before a run is resumed (the training loop's checkpoint and a run directory
alike): same settings, and something left to train."""
from __future__ import annotations


#: settings a resumed run may change: more epochs extend it; the precision changes how the
#: networks' arithmetic is done, not the model or the objective (and older runs lack it)
FREE_ON_RESUME = ("epochs", "precision")


def check_settings(saved: dict, now: dict) -> None:
    """Refuse to resume with settings other than those the run was made with: every one but
    ``epochs`` must match (more epochs extend a run), and ``epochs`` too when a learning-rate
    schedule other than ``constant`` was laid out over them. Raises ``ValueError`` naming
    each difference."""
    changed = {k: (saved.get(k), v) for k, v in now.items() if k not in FREE_ON_RESUME and saved.get(k) != v}
    if changed:
        raise ValueError("cannot resume: settings differ from the run's: "
                         + ", ".join(f"{k} was {a!r}, now {b!r}" for k, (a, b) in changed.items()))
    schedule = now.get("lr_schedule", "constant")
    if schedule != "constant" and saved.get("epochs") != now.get("epochs"):
        raise ValueError(f"cannot resume with epochs={now.get('epochs')}: the {schedule!r} learning-rate schedule "
                         f"was laid out over epochs={saved.get('epochs')}; use that value (or a constant schedule "
                         "to extend runs)")


class RunFinishedError(ValueError):
    """Resuming a run that has nothing left to train."""


def check_epochs_left(state: dict, epochs: int) -> None:
    """Refuse to resume the checkpoint ``state`` for ``epochs`` epochs in total when it has
    nothing left to train: a run that stopped early, or that trained all its epochs, is
    finished and its checkpoint stays as it is (more epochs extend it)."""
    done = state["epoch"]
    if state.get("finished"):
        history = state.get("history", {})
        raise RunFinishedError(f"the run is finished: it stopped early at epoch {done} (best epoch "
                               f"{history.get('best_epoch', '?')}); there is nothing to resume, and its checkpoint "
                               "holds the best weights; train a new run to go on")
    if done >= epochs:
        raise RunFinishedError(f"the run is finished: it trained {done} of {epochs} epochs; to train on, resume "
                               f"with more epochs (--epochs N with N > {done})")
