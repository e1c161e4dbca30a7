"""Run-directory files: config.json and metrics.json, written atomically; the settings check
on resume and the refusal to overwrite a run (every family)."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from ..infer.resume import check_settings


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
    """Create ``out`` and write ``config.json``; on resume first check the settings against the
    saved ones (:func:`ppgen.infer.resume.check_settings`); never start over an existing run
    unasked."""
    out = Path(out)
    if resume:
        check_settings(read_json(out / "config.json"), config)
    elif (out / "checkpoint.pt").exists():
        raise FileExistsError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", config)
    return out
