"""Where data lives: data root resolution, checksummed downloads, the preprocessed-tensor cache.

The *data root* holds the raw releases as published (``<root>/omniglot/images_background.zip``,
``<root>/miniimagenet/images/<filename>.jpg``) and may be read-only. Preprocessed uint8 tensors
go to the *cache directory*, which is always writable and can be deleted at any time.

    data root:  explicit argument  >  $METALAB_DATA   >  platformdirs.user_data_dir("metalab")
    cache:      $METALAB_CACHE     >  platformdirs.user_cache_dir("metalab")
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping
from importlib.resources import files
from pathlib import Path

import platformdirs

DATA_ENV = "METALAB_DATA"
CACHE_ENV = "METALAB_CACHE"
OMNIGLOT_URL_ENV = "METALAB_OMNIGLOT_URL"

OMNIGLOT_URL = "https://github.com/brendenlake/omniglot/raw/master/python"
#: The official Omniglot archives that ``metalab data --download omniglot`` fetches, with their MD5.
OMNIGLOT_CHECKSUMS: dict[str, str | None] = {
    "images_background.zip": "68d2efa1b9178cc56df9314c21c6e718",
    "images_evaluation.zip": "6b91aef0f799c5bb55b94e3f2daec811",
}
#: Omniglot archives (stem -> what it is); the small subsets are read if present but not downloaded.
OMNIGLOT_ARCHIVES: dict[str, str] = {
    "images_background": "964 characters, 30 alphabets",
    "images_evaluation": "659 characters, 20 alphabets",
    "images_background_small1": "official small background subset 1, 5 alphabets",
    "images_background_small2": "official small background subset 2, 5 alphabets",
}
MINIIMAGENET_SPLITS = ("train", "val", "test")

_CHUNK = 1 << 20


class DataNotFoundError(FileNotFoundError):
    """A data set (or a file of it) is not where metalab looks; the message says what to put where."""


class ChecksumError(ValueError):
    """A downloaded file does not have the expected MD5."""


def resolve_data_root(explicit: str | Path | None = None) -> Path:
    """The data root: ``explicit`` if given, else ``$METALAB_DATA``, else the user data dir."""
    if explicit is not None and str(explicit) != "":
        return Path(explicit).expanduser()
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
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
                f"the file changed upstream; nothing was written to {destination}. Retry, or place a good copy there by hand."
            )
        os.replace(temp, destination)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return destination


def download_dataset(
    name: str,
    root: Path,
    base_url: str | None = None,
    checksums: Mapping[str, str | None] | None = None,
) -> list[Path]:
    """Download a data set's official archives into ``root`` and return their paths.

    Only ``omniglot`` is downloadable: ``images_background.zip`` and ``images_evaluation.zip`` go
    to ``<root>/omniglot/``. ``base_url`` (or ``$METALAB_OMNIGLOT_URL``) replaces the URL prefix;
    ``checksums`` ({file name: MD5 or None}) replaces the list of files and their checksums.
    Archives already present are kept as they are (downloads are atomic, so a present file is complete).
    """
    if name != "omniglot":
        hint = (
            f"; mini-ImageNet cannot be downloaded automatically: place its images as "
            f"{Path(root) / 'miniimagenet' / 'images'}/<filename>.jpg"
            if name == "miniimagenet"
            else ""
        )
        raise ValueError(f"cannot download data set {name!r}: only 'omniglot' is downloadable{hint}")
    prefix = (base_url or os.environ.get(OMNIGLOT_URL_ENV) or OMNIGLOT_URL).rstrip("/")
    wanted = dict(checksums) if checksums is not None else OMNIGLOT_CHECKSUMS
    paths = []
    for filename, md5 in wanted.items():
        destination = Path(root) / "omniglot" / filename
        if not destination.exists():
            download(f"{prefix}/{filename}", destination, md5)
        paths.append(destination)
    return paths


def omniglot_source(root: Path, archive: str) -> Path | None:
    """The Omniglot archive ``archive`` (e.g. ``images_background``) under ``root``: zip or extracted folder.

    The zip is preferred when both exist (a zip that opens is complete; a folder may be half-extracted).
    """
    zipped = Path(root) / "omniglot" / f"{archive}.zip"
    if zipped.is_file():
        return zipped
    folder = Path(root) / "omniglot" / archive
    if folder.is_dir():
        return folder
    return None


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


def _size(path: Path) -> str:
    if path.is_file():
        return f"{path.stat().st_size / 1e6:.1f} MB"
    return "folder"


def describe_data(root: Path | None = None) -> str:
    """The human-readable report behind ``metalab data``: what is found where, what is cached, how to get the rest."""
    from metalab.data import folders, omniglot  # lazy: they import this module

    origin = data_root_origin(root)
    root = resolve_data_root(root)
    cache = cache_dir()
    lines = [f"data root: {root} ({origin})", f"cache:     {cache} (${CACHE_ENV}; safe to delete)", ""]

    lines.append("Omniglot")
    missing_downloadable = False
    for archive, what in OMNIGLOT_ARCHIVES.items():
        source = omniglot_source(root, archive)
        if source is None:
            lines.append(f"  {archive:<26} missing ({what})")
            expected = f"{root / 'omniglot' / (archive + '.zip')} or the extracted folder {root / 'omniglot' / archive}/"
            lines.append(f"  {'':<26}   expected {expected}")
            if f"{archive}.zip" in OMNIGLOT_CHECKSUMS:
                missing_downloadable = True
            else:
                lines.append(f"  {'':<26}   get it from {OMNIGLOT_URL}/{archive}.zip")
            continue
        kind = "zip" if source.is_file() else "extracted folder"
        sizes = omniglot.cached_sizes(source)
        cached = f"cached at {', '.join(f'{s}px' for s in sizes)}" if sizes else "no cache yet (built on first use)"
        lines.append(f"  {archive:<26} found: {source} ({kind}, {_size(source)}); {cached}")
    if missing_downloadable:
        lines.append(f"  -> get the full release with `metalab data --download omniglot` (into {root / 'omniglot'})")
    counts = ", ".join(f"{s} {len(split_list('omniglot', 'vinyals', f'{s}.txt'))}" for s in omniglot.VINYALS_SPLITS)
    lines.append(f"  Vinyals split lists (packaged): {counts} classes")
    lines.append("")

    lines.append("mini-ImageNet")
    images_dir = root / "miniimagenet" / "images"
    present = set(os.listdir(images_dir)) if images_dir.is_dir() else set()
    incomplete = False
    for split in MINIIMAGENET_SPLITS:
        names = [row[0] for row in folders.read_split_csv(None, split)]
        found = sum(name in present for name in names)
        sizes = folders.cached_miniimagenet_sizes(split)
        cached = f"; cached at {', '.join(f'{s}px' for s in sizes)}" if sizes else ""
        state = "complete" if found == len(names) else ("missing" if found == 0 else "incomplete")
        incomplete = incomplete or found < len(names)
        lines.append(f"  {split:<5} (Ravi split, packaged): {found}/{len(names)} images present ({state}){cached}")
    if incomplete:
        lines.append(f"  -> to get them: place the images as {images_dir}/<filename>.jpg (file names as in the split CSVs);")
        lines.append("     metalab cannot download mini-ImageNet (ImageNet licence)")
    return "\n".join(lines)
