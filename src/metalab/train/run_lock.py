"""One trainer per run directory: ``<run.dir>/train.lock`` names the process that trains there.

The lock is an exclusive ``flock`` on that file, which the OS drops when its holder exits in any way, so
taking it is atomic and a lock left by a killed trainer is free again. The file's text (pid, host) is
for the message that refuses a second trainer; a file still there with its lock free was left by a
trainer that did not finish (killed), and the next one takes it over, saying so. ``metalab eval`` and
``predict`` only read a run and take no lock.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from metalab.utils.io import write_error

LOCK = "train.lock"


class RunLockedError(FileExistsError):
    """Another trainer holds the run directory's lock."""


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir``'s lock for the ``with`` block (created with the directory if needed), then remove it.

    Raises :class:`RunLockedError` naming the holder when another process holds it.
    """
    path = run_dir / LOCK
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        handle = _acquire(path)
    except OSError as error:
        failure = write_error(error)
        if failure is None:
            raise
        raise failure from error
    if handle is None:
        print(f"metalab: the file system of {run_dir} does not support locks ({path}); make sure that no other "
              f"trainer uses this run.dir", file=sys.stderr)
        yield
        return
    try:
        left = _holder(handle)
        if left:
            print(f"metalab: {path} was left by {left}, which stopped without releasing it (killed?); taking it over",
                  file=sys.stderr)
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode("utf-8")
        os.ftruncate(handle, 0)
        os.pwrite(handle, record, 0)
        os.fsync(handle)
        yield
    finally:
        path.unlink(missing_ok=True)  # while still holding it: a trainer that opens it after this waits for a new file
        os.close(handle)


def _acquire(path: Path) -> int | None:
    """An open descriptor of ``path`` holding its exclusive lock; None where the file system has no locks."""
    while True:
        handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            holder = _holder(handle) if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN) else None
            os.close(handle)
            if holder is None and error.errno in (errno.ENOLCK, errno.EOPNOTSUPP):
                return None
            if holder is None:
                raise
            raise RunLockedError(
                f"{path.parent} is being trained by {holder or 'another process'} (it holds {path}); one trainer per "
                f"run.dir: wait for it to finish or stop it, then continue with --resume, or train in another run.dir. "
                f"metalab eval and predict may read the run meanwhile"
            ) from None
        try:
            same = os.path.samestat(os.fstat(handle), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            return handle
        os.close(handle)  # its holder removed the file as we opened it: lock the file that is there now


def _holder(handle: int) -> str:
    """Who the lock file names ("pid 123 on host h"), or "" when it is empty."""
    text = os.pread(handle, 4096, 0).decode("utf-8", errors="replace").strip()
    if not text:
        return ""
    try:
        record = json.loads(text)
        return f"pid {record['pid']} on host {record['host']}"
    except (ValueError, KeyError, TypeError):
        return f"a process that wrote {text[:80]!r}"
