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
import stat
import struct
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path

#: What decoders raise on a damaged, truncated or foreign file (OSError covers BadGzipFile).
DECODE_ERRORS = (EOFError, OSError, zipfile.BadZipFile, zlib.error, pickle.UnpicklingError, struct.error,
                 UnicodeDecodeError)


#: What ``stat`` calls the kinds of special file, for :func:`refuse_special`.
_SPECIAL = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
            (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def refuse_special(path) -> None:
    """``ValueError`` naming ``path`` when it is a FIFO, device or socket, checked by ``stat``
    before anything opens it: opening a FIFO blocks until a writer comes (a hang, not an
    error), and the loaders need a file they can seek in and map. Missing paths, files and
    folders pass (the caller says what it needs of them)."""
    try:
        mode = os.stat(Path(path).expanduser()).st_mode
    except OSError:
        return
    for test, kind in _SPECIAL:
        if test(mode):
            raise ValueError(f"{path} is {kind}, not a regular file; ppgen reads data from files it can seek in "
                             "and map: write the data to a file first")


def available_memory() -> int | None:
    """Bytes this process can still allocate without swapping, as far as Linux says:
    ``MemAvailable`` of ``/proc/meminfo``, lowered to the room left under a cgroup (v2)
    memory limit (a container's); ``os.sysconf`` free pages elsewhere; None when unknown."""
    found = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            room = max(0, int(limit) - used)
            found = room if found is None else min(found, room)
    except (OSError, ValueError):
        pass
    if found is None:
        try:
            found = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):
            return None
    return found


def check_fits_in_memory(nbytes: int, what: str, hint: str) -> None:
    """``ValueError`` when ``nbytes`` (what a file's header declares that reading ``what``
    takes) exceeds :func:`available_memory`, checked before a byte of it is read or
    decompressed: otherwise the read runs for minutes and ends killed or in ``MemoryError``."""
    room = available_memory()
    if room is not None and nbytes > room:
        raise ValueError(f"{what} needs {_size(nbytes)} in memory, but only {_size(room)} is available; {hint}")


def _size(nbytes: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} bytes"


def existing_file(path, what: str) -> Path:
    """``path`` (``~`` expanded) when it is a regular file, else ``FileNotFoundError`` naming
    it (``ValueError`` for a FIFO, device or socket: :func:`refuse_special`)."""
    path = Path(path).expanduser()
    refuse_special(path)
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
