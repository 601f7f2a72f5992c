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
import http.client
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from importlib.resources import files
from pathlib import Path

import platformdirs
from tqdm import tqdm

from metalab.utils.checksum import IntegrityError, torch_load_checked, torch_save_checked

DATA_ENV = "METALAB_DATA"
CACHE_ENV = "METALAB_CACHE"

_CHUNK = 1 << 20


class DataNotFoundError(FileNotFoundError):
    """A data set (or a file of it) is not where metalab looks; the message says what to put where."""


class ChecksumError(ValueError):
    """A downloaded file does not have the expected checksum (MD5 or SHA-256)."""


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


def source_fingerprint(source: Path) -> str:
    """Changes whenever a data source changes: path + size + mtime of a file, or of every file of a folder."""
    if source.is_file():
        stat = source.stat()
        return fingerprint(str(source.resolve()), stat.st_size, stat.st_mtime_ns)
    total, latest, count = 0, 0, 0
    for directory, _, filenames in os.walk(source):
        for filename in filenames:
            stat = os.stat(os.path.join(directory, filename))
            total, latest, count = total + stat.st_size, max(latest, stat.st_mtime_ns), count + 1
    return fingerprint(str(source.resolve()), count, total, latest)


def release_source(folder: Path, archive: str, extracted: str) -> Path | None:
    """A data set's release in ``folder``: the ``archive`` file (preferred: a download appears only when complete)
    or the ``extracted`` folder, or None."""
    if (Path(folder) / archive).is_file():
        return Path(folder) / archive
    return Path(folder) / extracted if (Path(folder) / extracted).is_dir() else None


def file_md5(path: str | Path) -> str:
    """MD5 hex digest of a file, read in chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, destination: Path, md5: str | None, timeout: float = 60,
             progress: bool | None = None, sha256: str | None = None) -> Path:
    """Download ``url`` to ``destination``, checking its MD5 (or its ``sha256``, when given instead); the file
    appears only when complete and correct.

    Streams into ``<destination>.part`` beside it and renames that into place once the MD5 matches. A
    download cut off by the network keeps its ``.part`` file, and the next call resumes it with an HTTP range
    request where the server allows (206 Partial Content), or starts again where it does not. Raises
    :class:`ChecksumError` (nothing left behind) when the checksum differs, and :class:`DataNotFoundError`
    saying where to put the file by hand when the URL cannot be reached. ``progress``: show a byte counter on
    stderr (default: when stderr is a terminal).
    """
    destination = Path(destination)
    part = destination.with_name(destination.name + ".part")
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        with open(part, "ab"):
            pass
    except PermissionError as error:
        raise PermissionError(
            f"cannot write {destination}: {destination.parent} is not writable; "
            f"choose a writable data root with --data-root or ${DATA_ENV}"
        ) from error
    have = part.stat().st_size
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    algorithm, expected = ("sha256", sha256) if sha256 is not None else ("md5", md5)
    digest = hashlib.new(algorithm)
    try:
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                resumed = have > 0 and response.status == 206 and _range_start(response) == have
                if resumed:
                    with open(part, "rb") as previous:
                        for chunk in iter(lambda: previous.read(_CHUNK), b""):
                            digest.update(chunk)
                else:
                    have = 0
                total = _content_length(response)
                bar = tqdm(total=None if total is None else have + total, initial=have, unit="B", unit_scale=True,
                           desc=f"downloading {destination.name}", file=sys.stderr,
                           disable=not (sys.stderr.isatty() if progress is None else progress))
                received = 0
                with open(part, "ab" if resumed else "wb") as out, bar:
                    for chunk in iter(lambda: response.read(_CHUNK), b""):
                        digest.update(chunk)
                        out.write(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
                    out.flush()
                    os.fsync(out.fileno())
                if total is not None and received < total:  # http.client ends a cut-off body without an error
                    raise ConnectionResetError(f"the connection closed after {received} of {total} bytes")
        except (urllib.error.URLError, OSError, http.client.HTTPException) as error:  # HTTP errors, refused, DNS,
            # timeout, reset, a body cut off
            if isinstance(error, urllib.error.HTTPError) and error.code == 416 and have:
                part.unlink()  # the kept part is not a prefix of the file (416: range not satisfiable): start again
                return download(url, destination, md5, timeout, progress, sha256)
            if isinstance(error, urllib.error.HTTPError):
                reason: object = f"HTTP {error.code} {error.reason}"
            else:
                reason = getattr(error, "reason", None) or error
            kept = part.stat().st_size if part.exists() else 0
            resume = f" ({kept} bytes kept in {part}: the next download resumes from there)" if kept else ""
            raise DataNotFoundError(
                f"could not download {url} ({reason}){resume}; this machine may be offline. Get the file from "
                f"{url} on a machine with internet access and place it at {destination}"
            ) from error
        actual = digest.hexdigest()
        if expected is not None and actual.lower() != expected.lower():
            part.unlink(missing_ok=True)
            raise ChecksumError(
                f"checksum mismatch for {url}: expected {algorithm.upper()} {expected}, got {actual}. The download is "
                f"corrupt or the file changed upstream; nothing was written to {destination}. "
                f"Retry, or place a good copy there by hand."
            )
        os.replace(part, destination)
    finally:
        if part.exists() and part.stat().st_size == 0:
            part.unlink()
    return destination


def download_files(folder: Path, base_url: str, checksums: Mapping[str, str | None]) -> list[Path]:
    """Download each ``<base_url>/<file name>`` of ``checksums`` ({file name: MD5 or None}) into ``folder``; files
    already there are kept as they are (a download only appears when complete and checked)."""
    paths = []
    for filename, md5 in checksums.items():
        destination = Path(folder) / filename
        if not destination.exists():
            download(f"{base_url.rstrip('/')}/{filename}", destination, md5)
        paths.append(destination)
    return paths


def _range_start(response: object) -> int | None:
    """The first byte of a 206 response's ``Content-Range: bytes START-END/TOTAL``, or None."""
    value = getattr(response, "headers", {}).get("Content-Range", "")
    if not value.startswith("bytes "):
        return None
    start = value[len("bytes "):].split("-", 1)[0]
    return int(start) if start.isdigit() else None


def _content_length(response: object) -> int | None:
    value = getattr(response, "headers", {}).get("Content-Length")
    return int(value) if value and value.isdigit() else None


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
