"""Checks that fail early and clearly, before any training time is spent.

``check_workdir_writable`` proves the work directory can be created and written (by writing and
removing a small file in it); ``check_free_space`` refuses to start when its filesystem has less
free space than a run needs. Both raise :class:`OSError` subclasses whose message is one line
naming the directory, so a launcher's log says what is wrong without a traceback hunt.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

__all__ = [
    "InsufficientDiskSpace",
    "WorkdirNotWritable",
    "check_free_space",
    "check_workdir_writable",
]


class WorkdirNotWritable(OSError):
    """The work directory cannot be created, or a file cannot be written in it."""


class InsufficientDiskSpace(OSError):
    """The work directory's filesystem has less free space than needed."""


def _reason(e: OSError) -> str:
    return e.strerror or str(e) or type(e).__name__


def check_workdir_writable(workdir: str | os.PathLike) -> Path:
    """Creates ``workdir`` (and parents) if needed and writes, syncs and removes a small temporary
    file in it; returns the directory as an absolute Path.

    Raises WorkdirNotWritable (an OSError) with a one-line message naming the directory when any
    of that fails. Permission bits are not inspected: the write itself is the test, so the check
    is also right for root (who ignores modes), read-only mounts and full quotas."""
    path = Path(workdir).absolute()
    if path.exists() and not path.is_dir():
        raise WorkdirNotWritable(f"workdir {path} cannot be created: a file of that name exists")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _error(path, f"cannot be created: {_reason(e)}", e) from e
    try:
        fd, tmp = tempfile.mkstemp(prefix=".jaxrec-write-test-", dir=path)
    except OSError as e:
        raise _error(path, f"cannot be written: {_reason(e)}", e) from e
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(b"jaxrec\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise _error(path, f"cannot be written: {_reason(e)}", e) from e
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass
    return path


def _error(path: Path, what: str, cause: OSError) -> WorkdirNotWritable:
    err = WorkdirNotWritable(f"workdir {path} {what}")
    err.errno = cause.errno
    return err


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def check_free_space(workdir: str | os.PathLike, need_bytes: int) -> int:
    """Returns the free bytes on ``workdir``'s filesystem (its nearest existing ancestor when it
    does not exist yet); raises InsufficientDiskSpace (an OSError) with a one-line message naming
    the directory, the free and the needed space when fewer than ``need_bytes`` are free."""
    path = Path(workdir).absolute()
    free = shutil.disk_usage(_existing_ancestor(path)).free
    if free < int(need_bytes):
        err = InsufficientDiskSpace(
            f"workdir {path}: {_human(free)} free on its filesystem, {_human(need_bytes)} needed"
        )
        raise err
    return free


def _human(n: float) -> str:
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
