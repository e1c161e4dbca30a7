"""One writer per run folder: an exclusive lock held for the life of the command.

Two ``ppgen train --out R`` started together, or two ``--resume`` of one run, would each write
config.json, the checkpoint and metrics.json, and leave a folder whose files come from
different runs. Every command that writes into a run folder (train, resume, eval, report;
sample and continue when their ``--out`` is inside it) holds :func:`hold` around its work: an
``fcntl.flock`` on ``R/.lock``. The lock, not the file, is what counts: the kernel drops it
when the holder ends, however it ends (a killed process leaves a file that blocks nothing).
The file holds the holder's process id and command, so that the refusal can name them.

Under torchrun, rank 0 holds the lock for all processes and tells them whether it got it, so
that all of them stop together with the same error (printed once, by rank 0).
"""
from __future__ import annotations

import fcntl
import os
import shlex
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..infer import distributed

#: the lock file in a run folder (hidden; it is bookkeeping, not part of the run)
LOCK_NAME = ".lock"


class RunFolderInUse(OSError):
    """Another process holds the run folder's lock (a user error: wait, or use another folder)."""


def command_line() -> str:
    """This process's command as the user typed it: ``ppgen ...`` for the CLI (the console
    script or ``python -m ppgen``), the Python command line otherwise."""
    argv = list(sys.argv)
    if argv and (Path(argv[0]).name == "ppgen" or argv[0].endswith(os.path.join("ppgen", "__main__.py"))):
        return shlex.join(["ppgen", *argv[1:]])
    return shlex.join(["python", *argv]) if argv and argv[0] else "python"


def holder(path: Path) -> str:
    """Who holds the lock in ``path``, from what the holder wrote there ("another process"
    when it has not written yet or the file cannot be read)."""
    try:
        pid, _, command = path.read_text().partition("\n")
    except (OSError, UnicodeDecodeError):
        return "another process"
    pid, command = pid.strip(), command.strip()
    if not pid.isdigit():
        return "another process"
    return f"process {pid}" + (f" ({command})" if command else "")


def acquire(folder) -> int:
    """Take the lock of ``folder`` (an existing folder) without waiting; return the open file
    descriptor that holds it. Raises :class:`RunFolderInUse` naming the holder, or
    ``PermissionError`` when the folder cannot take the lock file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"run directory not found: {folder}")
    path = folder / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as e:
        raise PermissionError(f"cannot write to {folder} ({e.strerror or e}); choose a folder you can write to") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunFolderInUse(f"run folder {folder} is in use by {holder(path)}; wait for it to end or choose "
                             "another folder") from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n{command_line()}\n".encode(), 0)
    return fd


def release(fd: int) -> None:
    """Let go of the lock taken by :func:`acquire`. The file stays (removing it would let a
    process that opened it a moment before lock a file no one else sees); emptied, it names
    no one."""
    try:
        os.ftruncate(fd, 0)
    except OSError:
        pass
    finally:
        os.close(fd)  # closing the descriptor drops the flock


@contextmanager
def hold(folder) -> Iterator[Path]:
    """The exclusive lock of the run folder ``folder`` (which must exist) while the block runs.

    Taken without waiting: a folder in use is refused at once with :class:`RunFolderInUse`
    ("run folder R is in use by process 1234 (ppgen train ...)"). Under torchrun every
    process calls it; rank 0 takes the lock and every process raises the same error when it
    could not."""
    folder = Path(folder)
    fd, error = None, None
    if distributed.is_main():
        try:
            fd = acquire(folder)
        except OSError as e:
            error = e
    if distributed.active():
        refusal = distributed.gather_objects(None if error is None else (type(error), str(error)))[0]
        if refusal is not None and error is None:
            kind, message = refusal
            error = (kind if issubclass(kind, OSError) else OSError)(message)
    if error is not None:
        raise error
    try:
        yield folder
    finally:
        if fd is not None:
            release(fd)


__all__ = ["LOCK_NAME", "RunFolderInUse", "hold", "acquire", "release", "holder"]
