"""Run-directory files: config.json, metrics.json and checkpoint.pt, written atomically; the
settings check on resume and the refusal to overwrite a run (every family)."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from ..infer.checkpoint import load_checkpoint


def read_config(run_dir) -> dict:
    """The config.json of a run directory, with errors that say which of the two is missing."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory not found: {run_dir}")
    return read_json(run_dir / "config.json")


def read_json(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"not found: {path}")
    return json.loads(path.read_text())


def write_json(path, obj) -> None:
    """Atomic write, like checkpoints: never a half-written metrics or config file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def start_run(out, config: dict, resume: bool) -> Path:
    """Create ``out`` and write ``config.json``; on resume check that every setting but
    ``epochs`` matches the saved one; never start over an existing run unasked."""
    out = Path(out)
    if resume:
        saved = read_json(out / "config.json")
        diff = {k: (saved.get(k), v) for k, v in config.items() if k != "epochs" and saved.get(k) != v}
        if diff:
            raise ValueError("cannot resume: the run was made with other settings: "
                             + ", ".join(f"{k}={a!r} (now {b!r})" for k, (a, b) in diff.items()))
    elif (out / "checkpoint.pt").exists():
        raise FileExistsError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", config)
    return out


def family_config(config: dict, defaults: dict) -> dict:
    """``model``, ``data`` and the family's own settings: the config's value where given (not
    None), the family default otherwise. Settings of other families are dropped, so they
    neither clutter config.json nor block a resume."""
    given = {k: v for k, v in config.items() if v is not None}
    return {"model": config["model"], "data": config["data"], **{k: given.get(k, d) for k, d in defaults.items()}}


def load_state(run_dir) -> dict:
    """The run's checkpoint, loaded safely (``weights_only=True``)."""
    return load_checkpoint(Path(run_dir) / "checkpoint.pt")


def update_metrics(run_dir, metrics: dict) -> dict:
    """Merge ``metrics`` into run_dir/metrics.json (atomically) and return the result."""
    path = Path(run_dir) / "metrics.json"
    merged = {**(read_json(path) if path.exists() else {}), **metrics}
    write_json(path, merged)
    return merged
