"""One way for every loader to report a bad data file: an error that names the file, the
problem and what to do, as ``FileNotFoundError``, ``ValueError`` or ``TypeError`` only.

The libraries that decode files fail with their own exceptions (``EOFError``,
``zipfile.BadZipFile``, ``gzip.BadGzipFile``, scipy's ``MatReadError``, ...), often with a
message that does not name the file. :func:`reading` turns those into one ``ValueError``
and puts the file's path in front of the loaders' own ``ValueError``/``TypeError``.
"""
from __future__ import annotations

import os
import pickle
import struct
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path

#: What decoders raise on a damaged, truncated or foreign file (OSError covers BadGzipFile).
DECODE_ERRORS = (EOFError, OSError, zipfile.BadZipFile, zlib.error, pickle.UnpicklingError, struct.error,
                 UnicodeDecodeError)


def existing_file(path, what: str) -> Path:
    """``path`` (``~`` expanded) when it is a file, else ``FileNotFoundError`` naming it."""
    path = Path(path).expanduser()
    if not path.is_file():
        where = "" if path.is_absolute() else f" (looked in {Path.cwd()})"
        problem = "is a directory, not a file" if path.is_dir() else "not found"
        raise FileNotFoundError(f"{what} {problem}: {path}{where}")
    return path


@contextmanager
def reading(path: Path, kind: str, hint: str, errors: tuple = ()):
    """Run a loader's reading of ``path``, a ``kind`` of file ("a .npy file"), so that every
    failure names it: decoding errors (:data:`DECODE_ERRORS` plus ``errors``) become
    ``ValueError("PATH is not a valid KIND (...); HINT")``; ``ValueError``/``TypeError``
    get the path in front unless they name it already; a missing file stays
    ``FileNotFoundError``."""
    try:
        yield
    except FileNotFoundError:
        raise
    except PermissionError as e:
        raise ValueError(f"cannot read {path}: {e.strerror or 'permission denied'}; check its permissions") from None
    except (UnicodeDecodeError, *errors) as e:  # before ValueError: UnicodeDecodeError is one
        raise ValueError(_not_valid(path, kind, hint, e)) from None
    except TypeError as e:
        raise TypeError(_named(path, e)) from None
    except ValueError as e:
        raise ValueError(_named(path, e)) from None
    except DECODE_ERRORS as e:
        raise ValueError(_not_valid(path, kind, hint, e)) from None


def _named(path: Path, error: Exception) -> str:
    message = str(error)
    return message if str(path) in message else f"{path}: {message}"


def _not_valid(path: Path, kind: str, hint: str, error: Exception) -> str:
    if path.is_file() and os.path.getsize(path) == 0:
        return f"{path} is empty (0 bytes), not a valid {kind}; {hint}"
    return f"{path} is not a valid {kind} ({type(error).__name__}: {error or 'no details'}); {hint}"
