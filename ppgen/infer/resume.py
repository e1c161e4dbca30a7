"""The one settings check before a run is resumed (the training loop's checkpoint and a run
directory's config.json alike)."""
from __future__ import annotations


def check_settings(saved: dict, now: dict) -> None:
    """Refuse to resume with settings other than those the run was made with: every one but
    ``epochs`` must match (more epochs extend a run), and ``epochs`` too when a learning-rate
    schedule other than ``constant`` was laid out over them. Raises ``ValueError`` naming
    each difference."""
    changed = {k: (saved.get(k), v) for k, v in now.items() if k != "epochs" and saved.get(k) != v}
    if changed:
        raise ValueError("cannot resume: settings differ from the run's: "
                         + ", ".join(f"{k} was {a!r}, now {b!r}" for k, (a, b) in changed.items()))
    schedule = now.get("lr_schedule", "constant")
    if schedule != "constant" and saved.get("epochs") != now.get("epochs"):
        raise ValueError(f"cannot resume with epochs={now.get('epochs')}: the {schedule!r} learning-rate schedule "
                         f"was laid out over epochs={saved.get('epochs')}; use that value (or a constant schedule "
                         "to extend runs)")
