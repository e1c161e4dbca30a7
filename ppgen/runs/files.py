"""Run-directory files: config.json and metrics.json, written atomically; what may be written
where (a new or empty folder, or one of ppgen's own runs; checked before any computing); the
resume check of a run directory (every family)."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from ..infer.checkpoint import atomic_write, load_checkpoint
from ..infer.resume import check_epochs_left, check_settings
from .lock import LOCK_NAME

#: what config.json must hold for a folder to be a ppgen run
RUN_KEYS = ("model", "data")


def read_config(run_dir) -> dict:
    """The config.json of a run directory, with errors that say what is missing or broken."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory not found: {run_dir}")
    config = read_json(run_dir / "config.json")
    missing = [k for k in RUN_KEYS if k not in config]
    if missing:
        raise ValueError(f"{run_dir / 'config.json'} has no {', '.join(map(repr, missing))} entry: is {run_dir} "
                         "a ppgen run directory?")
    return config


def read_json(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"not found: {path}")
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}); restore it or train the run again") from e
    if not isinstance(value, dict):
        raise ValueError(f"{path} holds a JSON {type(value).__name__}, not an object")
    return value


def write_json(path, obj) -> None:
    """Atomic write, like checkpoints: never a half-written metrics or config file."""
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=2) + "\n"), mode="w")


def check_writable(folder) -> Path:
    """``folder`` (created if missing) accepts new files; raises ``PermissionError`` naming
    it otherwise. Called before any computing, so that nothing is computed in vain."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise PermissionError(f"cannot write to {folder} ({e.strerror or e}); choose a folder you can write to") from e
    return folder


def check_output_file(path, *, force: bool) -> Path:
    """An output file's folder is writable, and the path is not a folder (nor, unless
    ``force``, an existing file): :func:`check_output_files` for one path."""
    return check_output_files([path], force)[0]


def check_output_files(paths, force: bool = False) -> list[Path]:
    """The one rule for the files a command writes outside a run folder (``ppgen sample``,
    ``continue``, ``quality``): no path is a folder, their folders are writable and, unless
    ``force`` (``--force``), none of them exists yet, so that a user's file is never replaced
    without being asked; a ``FileExistsError`` names every one that does. Called before any
    computing, so that nothing is computed in vain."""
    paths = [Path(p) for p in paths]
    for path in paths:
        if path.is_dir():
            raise IsADirectoryError(f"{path} is a folder; give a file name")
    for folder in dict.fromkeys(p.parent for p in paths):
        check_writable(folder)
    existing = [str(p) for p in paths if p.exists() or p.is_symlink()]
    if existing and not force:
        raise FileExistsError(f"{', '.join(existing)} already {'exists' if len(existing) == 1 else 'exist'}; "
                              "pass --force to replace, or choose another --out")
    return paths


def is_run(folder) -> bool:
    """Whether ``folder`` holds a ppgen run (a config.json with a model and data)."""
    try:
        read_config(folder)
    except (OSError, ValueError):
        return False
    return True


def check_run_folder(out, resume: bool) -> Path:
    """Check, before anything is computed or written, that ``out`` may take the run: a new or
    empty folder, or with ``resume`` a ppgen run with a checkpoint (a run's own folder is
    also reused when it holds no checkpoint yet: nothing trained is lost). A run is never
    started over unasked, and a folder of other files is never written into (a lock file
    alone, :mod:`.lock`, left by a process that ended before writing, does not count)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} is a file; --out names the run's folder")
    has_run, has_checkpoint = is_run(out), (out / "checkpoint.pt").is_file()
    if resume and not (has_run and has_checkpoint):
        raise FileNotFoundError(f"{out} holds no ppgen run to resume (no config.json and checkpoint.pt); drop "
                                "--resume to start one")
    if not resume and has_checkpoint:
        raise FileExistsError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    if not resume and not has_run and out.is_dir() and any(p.name != LOCK_NAME for p in out.iterdir()):
        raise FileExistsError(f"{out} is not empty and holds no ppgen run; ppgen writes only into a new or empty "
                              "folder (or one of its runs): choose another --out")
    return check_writable(out)


def check_resume(out, config: dict) -> None:
    """The run in ``out`` may be resumed with ``config``: the same settings as its config.json
    (``epochs`` may grow) and epochs left (:mod:`ppgen.infer.resume`)."""
    out = Path(out)
    check_settings(read_config(out), config)
    check_epochs_left(load_checkpoint(out / "checkpoint.pt"), config["epochs"])
