"""Atomic file writes: a crash never leaves a half-written checkpoint, result or cache file.

A file is written into a temporary file beside it (``.<name>.XXXXXXXX.tmp``), flushed to the disk and
renamed over the target: readers see the old file or the new one, never a mixture. An OS error while
writing (disk full, read-only file system, no permission) removes the temporary file, leaves the target
as it was, and is raised as a :class:`WriteError` that names the file and the cause in one line.
"""
from __future__ import annotations

import errno
import io
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

#: The OS errors that mean "this place cannot be written", and how a user reads them.
WRITE_FAILURES: dict[int, str] = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}
#: Of those, the ones that only a write meets (a read refused with EACCES is another problem).
_ONLY_WRITES = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


class WriteError(OSError):
    """A file could not be written (disk full, read-only, no permission); the message names the file and the cause."""

    def __init__(self, message: str, code: int | None = None, path: str | Path | None = None) -> None:
        super().__init__(message)
        self.errno = code
        self.filename = None if path is None else str(path)

    def __str__(self) -> str:
        return str(self.args[0])


def write_error(error: OSError, path: str | Path | None = None, writing: bool = True) -> WriteError | None:
    """``error`` as a one-line :class:`WriteError` naming ``path`` (else the error's own file name) and the cause;
    None when ``error`` is not one of :data:`WRITE_FAILURES` (a missing file, say, is another problem).

    ``writing=False``: ``error`` may come from a read as well; only the causes that only writes meet count.
    """
    if isinstance(error, WriteError):
        return error
    code = error.errno or 0  # no errno: 0, which is none of the failures
    cause = WRITE_FAILURES.get(code)
    if cause is None or not (writing or code in _ONLY_WRITES):
        return None
    where = path if path is not None else error.filename
    target = f"write {where}" if where is not None else "write a file"
    return WriteError(f"cannot {target}: {cause} ({errno.errorcode[code]})", code, where)


def atomic_write_bytes(path: str | Path, data: bytes | memoryview) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename it over ``path``.

    Raises :class:`WriteError` when the place cannot be written; the temporary file is gone and ``path``
    is unchanged (the previous file, if any, is intact).
    """
    path = Path(path)
    temp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        temp = Path(temp_name)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(handle, view):]
            os.fsync(handle)
        finally:
            os.close(handle)
        os.replace(temp, path)
    except BaseException as error:
        if temp is not None:
            temp.unlink(missing_ok=True)
        failure = write_error(error, path) if isinstance(error, OSError) else None
        if failure is not None and failure is not error:
            raise failure from error
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> None:
    """``write(file)`` into memory, then :func:`atomic_write_bytes` to ``path`` (for writers that want a file object,
    e.g. ``figure.savefig`` or ``joblib.dump``)."""
    buffer = io.BytesIO()
    write(buffer)
    atomic_write_bytes(path, buffer.getbuffer())


def stale_temp_files(directory: str | Path, names: Iterable[str]) -> list[Path]:
    """The temporary files that :func:`atomic_write_bytes` left in ``directory`` for the files ``names`` when a
    process was killed mid-write: ``.<name>.XXXXXXXX.tmp`` (``tempfile.mkstemp``'s 8 characters), nothing else.

    Only safe to remove while no other process writes those files (the trainer holds its run's lock).
    """
    directory = Path(directory)
    pattern = re.compile(r"\.(?:" + "|".join(re.escape(name) for name in names) + r")\.[a-z0-9_]{8}\.tmp")
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if pattern.fullmatch(p.name) and p.is_file())
