"""Atomic writes: an OS error (disk full, read-only) is one clear error, the old file stays, no temp file is left;
the temp-file pattern that a killed writer leaves, and only that, is recognised."""
from __future__ import annotations

import errno
import os

import pytest

from metalab.utils import io as metalab_io
from metalab.utils.io import WriteError, atomic_write_bytes, atomic_write_text, stale_temp_files


@pytest.mark.parametrize("code, cause", [(errno.ENOSPC, "no space left on the device (ENOSPC)"),
                                         (errno.EROFS, "read-only file system (EROFS)"),
                                         (errno.EACCES, "permission denied (EACCES)")])
def test_a_failed_write_names_file_and_cause_and_keeps_the_old_file(tmp_path, monkeypatch, code, cause):
    target = tmp_path / "results.json"
    atomic_write_text(target, "old")
    real_write = os.write
    written = []

    def failing(handle, data):
        if len(written) == 1:  # the first chunk goes through, the next one meets a full disk
            raise OSError(code, os.strerror(code))
        written.append(len(data))
        return real_write(handle, data[:10])

    monkeypatch.setattr(metalab_io.os, "write", failing)
    with pytest.raises(WriteError) as failed:
        atomic_write_bytes(target, b"new" * 100)
    assert str(failed.value) == f"cannot write {target}: {cause}"
    assert failed.value.errno == code and failed.value.filename == str(target)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_other_os_errors_pass_unchanged(tmp_path, monkeypatch):
    monkeypatch.setattr(metalab_io.os, "fsync", lambda handle: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")))
    with pytest.raises(OSError) as failed:
        atomic_write_text(tmp_path / "a.txt", "x")
    assert not isinstance(failed.value, WriteError) and failed.value.errno == errno.EIO
    assert not list(tmp_path.iterdir())


def test_stale_temp_files_are_the_writers_own_names_only(tmp_path):
    for name in (".last.pt.k3_x9a0b.tmp", ".best.pt.abcdefgh.tmp", ".last.pt.short.tmp", ".last.pt.ABCDEFGH.tmp",
                 "last.pt.abcdefgh.tmp", ".mine.pt.abcdefgh.tmp", ".last.pt.abcdefgh.tmp.keep", "last.pt"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in stale_temp_files(tmp_path, ["last.pt", "best.pt"])] == [
        ".best.pt.abcdefgh.tmp", ".last.pt.k3_x9a0b.tmp"]
    # what the writer really names its temporary files matches
    import tempfile

    handle, name = tempfile.mkstemp(prefix=".last.pt.", suffix=".tmp", dir=tmp_path)
    os.close(handle)
    assert tmp_path / os.path.basename(name) in stale_temp_files(tmp_path, ["last.pt"])
