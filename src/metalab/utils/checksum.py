"""``torch.save`` files that carry the SHA-256 of their content, checked when they are read back
(checkpoints, data caches): a damaged file is refused instead of silently giving other numbers.

``torch.save`` writes a zip archive. The digest of that archive, as ``torch.save`` produced it, goes into
the archive's comment (the end-of-archive record's free-text field), which every zip reader, ``torch.load``
included, passes over: a checked file is still an ordinary ``torch.save`` file. Files written before
checksums existed have no comment; they load unchecked (:func:`torch_load_checked` says whether it checked).
"""
from __future__ import annotations

import hashlib
import io
import struct
from pathlib import Path
from typing import Any

import torch

from metalab.utils.io import atomic_write_bytes

_MARK = b"metalab-sha256:"
_COMMENT_SIZE = len(_MARK) + 64
#: The zip end-of-central-directory record: signature, 16 bytes of fields, then the comment's length (2 bytes).
_END_SIGNATURE = b"PK\x05\x06"
_END_SIZE = 22


class IntegrityError(ValueError):
    """A file's content differs from the checksum written into it, or a file that must carry one has none."""


def with_checksum(archive: bytes) -> bytes:
    """``archive`` (``torch.save``'s bytes) with the SHA-256 of those bytes as its zip comment."""
    end = archive[-_END_SIZE:]
    if len(archive) < _END_SIZE or end[:4] != _END_SIGNATURE or end[-2:] != b"\0\0":
        raise ValueError("not a zip archive without a comment; expected torch.save's output")
    comment = _MARK + hashlib.sha256(archive).hexdigest().encode("ascii")
    return archive[:-2] + struct.pack("<H", len(comment)) + comment


def stored_checksum(data: bytes) -> tuple[str, str] | None:
    """(stored digest, digest of the content now) of a file written with :func:`with_checksum`, else None."""
    size = _END_SIZE + _COMMENT_SIZE
    if len(data) < size:
        return None
    end = data[-size:]
    if end[:4] != _END_SIGNATURE or end[20:22] != struct.pack("<H", _COMMENT_SIZE) or end[22:][:len(_MARK)] != _MARK:
        return None
    stored = end[22 + len(_MARK):].decode("ascii", errors="replace")
    digest = hashlib.sha256()
    digest.update(memoryview(data)[:-(_COMMENT_SIZE + 2)])
    digest.update(b"\0\0")  # the comment's length as torch.save wrote it
    return stored, digest.hexdigest()


def torch_save_checked(obj: Any, path: str | Path) -> None:
    """``torch.save(obj)`` into ``path`` with its checksum, atomically (see :mod:`metalab.utils.io`)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, with_checksum(buffer.getvalue()))


def torch_load_checked(path: str | Path, *, weights_only: bool, require_checksum: bool = False) -> Any:
    """``torch.load`` of a file after checking its checksum; :class:`IntegrityError` when the content changed.

    A file without a checksum (written before metalab wrote them) loads unchecked, unless ``require_checksum``,
    which refuses it with :class:`IntegrityError` too (for files that can be rebuilt, such as caches).
    """
    path = Path(path)
    data = path.read_bytes()
    checksum = stored_checksum(data)
    if checksum is None and require_checksum:
        raise IntegrityError(f"{path} carries no checksum (written by an earlier metalab), so it cannot be checked")
    if checksum is not None and checksum[0] != checksum[1]:
        stored, actual = checksum
        raise IntegrityError(f"{path} is damaged: its content no longer matches the SHA-256 written into it "
                             f"(stored {stored[:12]}..., now {actual[:12]}...)")
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=weights_only)
