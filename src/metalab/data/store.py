"""Where data lives: data root resolution, checksummed downloads, the preprocessed-tensor cache.

The store knows no data set: each data set's module (``omniglot.py``, ``miniimagenet.py``, ...)
builds on it, and ``datasets.py`` knows them all.

The *data root* holds the raw releases as published (``<root>/omniglot/images_background.zip``,
``<root>/miniimagenet/images/<filename>.jpg``) and may be read-only. Preprocessed uint8 tensors
go to the *cache directory*, which is always writable and can be deleted at any time. Cache files
carry a checksum (:func:`write_cache`, :func:`read_cache`): a damaged one is rebuilt, never used.

    data root:  explicit argument  >  $METALAB_DATA   >  platformdirs.user_data_dir("metalab")
    cache:      $METALAB_CACHE     >  platformdirs.user_cache_dir("metalab")
"""
from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import urllib.error
import urllib.request
from importlib.resources import files
from pathlib import Path

import platformdirs

from metalab.utils.checksum import IntegrityError, torch_load_checked, torch_save_checked

DATA_ENV = "METALAB_DATA"
CACHE_ENV = "METALAB_CACHE"

_CHUNK = 1 << 20


class DataNotFoundError(FileNotFoundError):
    """A data set (or a file of it) is not where metalab looks; the message says what to put where."""


class ChecksumError(ValueError):
    """A downloaded file does not have the expected MD5."""


def resolve_data_root(explicit: str | Path | None = None) -> Path:
    """The data root: ``explicit`` if given, else ``$METALAB_DATA``, else the user data dir."""
    if explicit is not None and str(explicit) != "":
        return Path(os.path.expanduser(explicit))  # Path.expanduser raises for an unknown ~user
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(os.path.expanduser(env))
    return Path(platformdirs.user_data_dir("metalab"))


def data_root_origin(explicit: str | Path | None = None) -> str:
    """Where :func:`resolve_data_root` got its answer from, for reports."""
    if explicit is not None and str(explicit) != "":
        return "given explicitly"
    if os.environ.get(DATA_ENV):
        return f"from ${DATA_ENV}"
    return f"default; set ${DATA_ENV} or pass --data-root to change it"


def cache_dir() -> Path:
    """The directory for preprocessed tensors (``$METALAB_CACHE`` or the user cache dir), created on demand."""
    env = os.environ.get(CACHE_ENV)
    path = Path(env).expanduser() if env else Path(platformdirs.user_cache_dir("metalab"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def read_cache(path: Path, version: int) -> dict | None:
    """The payload of a cache file written by :func:`write_cache` with this ``version``; None when it must be built.

    A file whose checksum does not match (or that has none: written by an earlier metalab) is reported in one
    line on stderr and left to be rebuilt; one that cannot be read otherwise (another torch) is rebuilt silently.
    """
    if not path.is_file():
        return None
    try:
        payload = torch_load_checked(path, weights_only=True, require_checksum=True)
    except IntegrityError as error:
        print(f"metalab: rebuilding a cache file: {error}", file=sys.stderr)
        return None
    except Exception:  # unreadable (e.g. written by another torch version): rebuild it
        return None
    return payload if isinstance(payload, dict) and payload.get("version") == version else None


def write_cache(path: Path, payload: dict) -> None:
    """Write a cache file (``payload["version"]`` says its layout) atomically, with its checksum."""
    torch_save_checked(payload, path)


def fingerprint(*parts: object) -> str:
    """A short stable hash of ``parts`` (used in cache file names)."""
    return hashlib.sha1(repr(parts).encode("utf-8")).hexdigest()[:16]


def file_md5(path: str | Path) -> str:
    """MD5 hex digest of a file, read in chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, destination: Path, md5: str | None, timeout: float = 60) -> Path:
    """Download ``url`` to ``destination``, checking its MD5; the file appears only when complete and correct.

    Streams into a temporary file beside ``destination`` and renames it into place. Raises
    :class:`ChecksumError` (nothing left behind) when the MD5 differs, and :class:`DataNotFoundError`
    saying where to put the file by hand when the URL cannot be reached.
    """
    destination = Path(destination)
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".part", dir=destination.parent)
    except PermissionError as error:
        raise PermissionError(
            f"cannot write {destination}: {destination.parent} is not writable; "
            f"choose a writable data root with --data-root or ${DATA_ENV}"
        ) from error
    temp = Path(temp_name)
    digest = hashlib.md5()
    try:
        with os.fdopen(handle, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    for chunk in iter(lambda: response.read(_CHUNK), b""):
                        digest.update(chunk)
                        out.write(chunk)
            except (urllib.error.URLError, OSError) as error:  # HTTPError, refused, DNS, timeout, reset
                if isinstance(error, urllib.error.HTTPError):
                    reason: object = f"HTTP {error.code} {error.reason}"
                else:
                    reason = getattr(error, "reason", None) or error
                raise DataNotFoundError(
                    f"could not download {url} ({reason}); this machine may be offline. Get the file from {url} "
                    f"on a machine with internet access and place it at {destination}"
                ) from error
            out.flush()
            os.fsync(out.fileno())
        actual = digest.hexdigest()
        if md5 is not None and actual.lower() != md5.lower():
            raise ChecksumError(
                f"checksum mismatch for {url}: expected MD5 {md5}, got {actual}. The download is corrupt or "
                f"the file changed upstream; nothing was written to {destination}. "
                f"Retry, or place a good copy there by hand."
            )
        os.replace(temp, destination)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return destination


def split_list(*parts: str) -> list[str]:
    """Lines of a split list shipped in the package, e.g. ``split_list("omniglot", "vinyals", "train.txt")``."""
    resource = files("metalab") / "splits"
    for part in parts:  # one part at a time: namespace-package paths take a single segment
        resource = resource / part
    try:
        text = resource.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataNotFoundError(
            f"the split list splits/{'/'.join(parts)} is missing from the metalab package; reinstall metalab"
        ) from None
    return [line.strip() for line in text.splitlines() if line.strip()]
