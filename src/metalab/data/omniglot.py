"""Omniglot (Lake et al.) from the official release layout, decoded once into cached uint8 tensors:
where its archives are, how to download them, its splits, and its part of ``metalab data``'s report.

Layout under the data root (each archive zipped or extracted)::

    <root>/omniglot/images_background.zip         images_background/<Alphabet>/characterNN/XXXX_YY.png
    <root>/omniglot/images_evaluation.zip         images_evaluation/...
    <root>/omniglot/images_background_small1.zip  images_background_small1/...   (optional)
    <root>/omniglot/images_background_small2.zip  images_background_small2/...   (optional)

Images are grey-scale with strokes bright (255) on a black (0) background, [N, 1, S, S] uint8.
Splits:

- ``lake-background`` (964 characters), ``lake-evaluation`` (659), ``lake-background-small1``,
  ``lake-background-small2``: characters as classes, group = alphabet, no rotations.
- ``vinyals-train`` / ``-val`` / ``-test`` / ``-trainval`` (4112 / 688 / 1692 / 4800 classes): the
  packaged Vinyals lists over both archives, each rotation by 90 degrees a separate class.
- ``alphabets-train`` / ``-val`` / ``-test`` (25 / 11 / 10 alphabets): WarpGrad's multi-alphabet protocol
  (Flennerhag et al. 2020, after Leap, Flennerhag et al. 2019; the authors' code, flennerhag/warpgrad
  ``src/omniglot/data.py``): the alphabets of both archives with at least :data:`ALPHABET_MIN_CHARACTERS`
  characters, shuffled by :data:`ALPHABET_SEED`, meta-train / meta-test / meta-validation alphabets cut in that
  order; characters as classes, no rotations; each character's first :data:`ALPHABET_HELD_OUT` drawings are
  held out for queries (:attr:`ClassDataset.held_out`), the other 15 are the support.
"""
from __future__ import annotations

import logging
import os
import random
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import torch

from metalab.data.classes import ClassDataset
from metalab.data.folders import preprocess_image
from metalab.data.store import (
    DATA_ENV,
    DataNotFoundError,
    cache_dir,
    download_files,
    read_cache,
    resolve_data_root,
    source_fingerprint,
    split_list,
    write_cache,
)

URL_ENV = "METALAB_OMNIGLOT_URL"
URL = "https://github.com/brendenlake/omniglot/raw/master/python"
#: The official Omniglot archives that ``metalab data --download omniglot`` fetches, with their MD5.
CHECKSUMS: dict[str, str | None] = {
    "images_background.zip": "68d2efa1b9178cc56df9314c21c6e718",
    "images_evaluation.zip": "6b91aef0f799c5bb55b94e3f2daec811",
}
#: Omniglot archives (stem -> what it is); the small subsets are read if present but not downloaded.
ARCHIVES: dict[str, str] = {
    "images_background": "964 characters, 30 alphabets",
    "images_evaluation": "659 characters, 20 alphabets",
    "images_background_small1": "official small background subset 1, 5 alphabets",
    "images_background_small2": "official small background subset 2, 5 alphabets",
}

LAKE_SPLITS: dict[str, str] = {
    "lake-background": "images_background",
    "lake-evaluation": "images_evaluation",
    "lake-background-small1": "images_background_small1",
    "lake-background-small2": "images_background_small2",
}
VINYALS_SPLITS = ("train", "val", "test", "trainval")
#: the alphabet splits: (first, stop) positions in the shuffled list of eligible alphabets (the authors' code cuts
#: train = [:n], test = [n:n + 10], val = the rest; n = 25 meta-training alphabets, the paper's Omniglot table)
ALPHABET_SPLITS: dict[str, tuple[int, int | None]] = {"train": (0, 25), "test": (25, 35), "val": (35, None)}
#: alphabets with fewer characters cannot make a 20-way task (the authors' ``num_classes`` filter): 46 of 50 remain
ALPHABET_MIN_CHARACTERS = 20
#: seed of the alphabets' shuffle (random.Random, over the sorted names; the authors' default seed)
ALPHABET_SEED = 8879
#: drawings per character held out for queries (the authors' HOLD_OUT); each character has 20
ALPHABET_HELD_OUT = 5
SPLITS: tuple[str, ...] = (tuple(f"vinyals-{s}" for s in VINYALS_SPLITS) + tuple(LAKE_SPLITS)
                           + tuple(f"alphabets-{s}" for s in ALPHABET_SPLITS))

_CACHE_VERSION = 1


def archive_source(root: Path, archive: str) -> Path | None:
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


def download_omniglot(root: Path, base_url: str | None = None,
                      checksums: Mapping[str, str | None] | None = None) -> list[Path]:
    """Download the official archives into ``<root>/omniglot/`` and return their paths.

    ``images_background.zip`` and ``images_evaluation.zip`` by default. ``base_url`` (or
    ``$METALAB_OMNIGLOT_URL``) replaces the URL prefix; ``checksums`` ({file name: MD5 or None})
    replaces the list of files and their checksums. Archives already present are kept as they are
    (downloads are atomic, so a present file is complete).
    """
    return download_files(Path(root) / "omniglot", base_url or os.environ.get(URL_ENV) or URL,
                          CHECKSUMS if checksums is None else checksums)


def data_report(root: Path) -> list[str]:
    """Omniglot's lines of ``metalab data``: each archive found where (and its cache) or missing, how to get it."""
    lines = ["Omniglot"]
    missing_downloadable = False
    for archive, what in ARCHIVES.items():
        source = archive_source(root, archive)
        if source is None:
            lines.append(f"  {archive:<26} missing ({what})")
            expected = (f"{root / 'omniglot' / (archive + '.zip')} "
                        f"or the extracted folder {root / 'omniglot' / archive}/")
            lines.append(f"  {'':<26}   expected {expected}")
            if f"{archive}.zip" in CHECKSUMS:
                missing_downloadable = True
            else:
                lines.append(f"  {'':<26}   get it from {URL}/{archive}.zip")
            continue
        kind = "zip" if source.is_file() else "extracted folder"
        size = f"{source.stat().st_size / 1e6:.1f} MB" if source.is_file() else "folder"
        sizes = cached_sizes(source)
        cached = f"cached at {', '.join(f'{s}px' for s in sizes)}" if sizes else "no cache yet (built on first use)"
        lines.append(f"  {archive:<26} found: {source} ({kind}, {size}); {cached}")
    if missing_downloadable:
        lines.append(f"  -> get the full release with `metalab data --download omniglot` (into {root / 'omniglot'})")
    counts = ", ".join(f"{s} {len(split_list('omniglot', 'vinyals', f'{s}.txt'))}" for s in VINYALS_SPLITS)
    lines.append(f"  Vinyals split lists (packaged): {counts} classes")
    return lines


def load_omniglot(split: str, root: str | Path | None = None, image_size: int = 28) -> ClassDataset:
    """Load an Omniglot split as a :class:`ClassDataset` of uint8 images [N, 1, image_size, image_size].

    Args:
        split: one of :data:`SPLITS` (``vinyals-train``, ``lake-background``, ...).
        root: the data root (default: ``$METALAB_DATA`` or the user data dir); see :mod:`metalab.data.store`.
        image_size: side of the square images after a Lanczos resize (the originals are 105x105).
    """
    if split not in SPLITS:
        raise ValueError(f"unknown Omniglot split {split!r}; valid splits: {', '.join(SPLITS)}")
    if image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    data_root = resolve_data_root(root)
    if split in LAKE_SPLITS:
        return load_archive(LAKE_SPLITS[split], data_root, image_size).as_dataset(f"omniglot/{split}")
    if split.startswith("alphabets-"):
        return _alphabets(split.removeprefix("alphabets-"), data_root, image_size)
    return _vinyals(split.removeprefix("vinyals-"), data_root, image_size)


def load_archive(archive: str, root: Path, image_size: int) -> _Archive:
    """One Omniglot archive (``images_background``, ...) decoded (or read from the cache)."""
    source = archive_source(root, archive)
    if source is None:
        raise _not_found(root, [archive])
    cache_file = _cache_file(source, image_size)
    payload = read_cache(cache_file, _CACHE_VERSION)
    if payload is None:
        logging.getLogger(__name__).info(f"preparing Omniglot {archive} (once): decoding its drawings at {image_size}x"
                                         f"{image_size} px into {cache_file.parent}; later runs read the cache")
        payload = _decode(source, archive, image_size)
        write_cache(cache_file, payload)
    return _Archive(payload)


def cached_sizes(source: Path) -> list[int]:
    """Image sizes for which a cache of ``source`` (an archive zip or folder) exists and is current."""
    key = source_fingerprint(source)
    sizes = []
    for path in cache_dir().glob(f"omniglot-{_stem(source)}-*px-{key}.pt"):
        size = path.name.split("-")[-2].removesuffix("px")
        if size.isdigit():
            sizes.append(int(size))
    return sorted(sizes)


class _Archive:
    """The cached payload of one archive: images [N, 1, S, S] uint8, per-character item indices, names, groups."""

    def __init__(self, payload: dict) -> None:
        self.images: torch.Tensor = payload["images"]
        self.class_items: list[list[int]] = payload["class_items"]
        self.class_names: list[str] = payload["class_names"]
        self.groups: list[str] = payload["groups"]

    def as_dataset(self, name: str) -> ClassDataset:
        return ClassDataset(self.images, self.class_items, self.class_names, self.groups, name)


def _vinyals(split: str, root: Path, image_size: int) -> ClassDataset:
    """Vinyals split: base characters from both archives, rotated, ordered exactly as the packaged list."""
    wanted = split_list("omniglot", "vinyals", f"{split}.txt")
    bases = {line.rsplit("/", 1)[0] for line in wanted}
    angles = sorted({int(line.rsplit("/rot", 1)[1]) for line in wanted})
    missing = [a for a in ("images_background", "images_evaluation") if archive_source(root, a) is None]
    if missing:
        raise _not_found(root, missing)
    images, class_items, names, groups = [], [], [], []
    offset = 0
    for archive in ("images_background", "images_evaluation"):
        data = load_archive(archive, root, image_size)
        keep: list[int] = []  # only the characters of this split: rotating copies the images 4x
        for items, name, group in zip(data.class_items, data.class_names, data.groups, strict=True):
            if name in bases:
                keep.extend(items)
                class_items.append(list(range(offset, offset + len(items))))
                names.append(name)
                groups.append(group)
                offset += len(items)
        # index_select, not images[index]: one gather, and no slow parallel advanced indexing
        images.append(data.images.index_select(0, torch.as_tensor(keep, dtype=torch.long)))
    absent = sorted(bases - set(names))
    if absent:
        raise ValueError(
            f"the Vinyals {split} list names {len(absent)} characters that the Omniglot archives under "
            f"{root / 'omniglot'} lack (e.g. {', '.join(absent[:3])}); the archives are incomplete: re-download them "
            f"with `metalab data --download omniglot`"
        )
    base = ClassDataset(torch.cat(images), class_items, names, groups, f"omniglot/vinyals-{split}")
    rotated = base.with_rotations(angles)
    return rotated.subset([rotated.class_index(line) for line in wanted])


def alphabet_split(groups: list[str], split: str) -> list[str]:
    """The alphabets of ``split`` (train / val / test) among those of ``groups`` (one alphabet per character)."""
    counts = {alphabet: groups.count(alphabet) for alphabet in set(groups)}
    eligible = sorted(alphabet for alphabet, count in counts.items() if count >= ALPHABET_MIN_CHARACTERS)
    random.Random(ALPHABET_SEED).shuffle(eligible)
    start, stop = ALPHABET_SPLITS[split]
    return eligible[start:stop]


def _alphabets(split: str, root: Path, image_size: int) -> ClassDataset:
    """An alphabet split: the characters of its alphabets from both archives, the first drawings held out."""
    missing = [a for a in ("images_background", "images_evaluation") if archive_source(root, a) is None]
    if missing:
        raise _not_found(root, missing)
    parts = [load_archive(archive, root, image_size) for archive in ("images_background", "images_evaluation")]
    offsets = [0, len(parts[0].images)]
    class_items = [[offset + i for i in items] for part, offset in zip(parts, offsets) for items in part.class_items]
    names = [name for part in parts for name in part.class_names]
    groups = [group for part in parts for group in part.groups]
    wanted = set(alphabet_split(groups, split))
    keep = [c for c, group in enumerate(groups) if group in wanted]
    images = torch.cat([part.images for part in parts])
    return ClassDataset(images, class_items, names, groups, f"omniglot/alphabets-{split}",
                        held_out=ALPHABET_HELD_OUT).subset(keep)


def _decode(source: Path, archive: str, image_size: int) -> dict:
    """Decode every PNG of an archive: {"images": [N, 1, S, S] uint8, "class_items", "class_names", "groups"}."""
    by_class: dict[tuple[str, str], list[tuple[str, bytes | Path]]] = {}
    for alphabet, character, label, data in _members(source, archive):
        by_class.setdefault((alphabet, character), []).append((label, data))
    if not by_class:
        raise ValueError(
            f"{source} holds no Omniglot images in the expected layout "
            f"{archive}/<Alphabet>/characterNN/XXXX_YY.png; replace it with the official archive "
            f"(`metalab data --download omniglot`)"
        )
    arrays: list[np.ndarray] = []
    class_items: list[list[int]] = []
    names: list[str] = []
    groups: list[str] = []
    for alphabet, character in sorted(by_class):
        drawings = sorted(by_class[(alphabet, character)], key=lambda pair: pair[0])
        start = len(arrays)
        for label, data in drawings:
            arrays.append(preprocess_image(data, image_size, channels=1, invert=True, label=label))
        class_items.append(list(range(start, len(arrays))))
        names.append(f"{alphabet}/{character}")
        groups.append(alphabet)
    images = torch.from_numpy(np.stack(arrays))
    return {
        "version": _CACHE_VERSION,
        "images": images,
        "class_items": class_items,
        "class_names": names,
        "groups": groups,
        "image_size": image_size,
        "source": str(source),
    }


def _members(source: Path, archive: str) -> Iterator[tuple[str, str, str, bytes | Path]]:
    """(alphabet, character, label for errors, PNG bytes or path) for every drawing of the archive."""
    if source.is_dir():
        for alphabet_dir in sorted(p for p in source.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for character_dir in sorted(p for p in alphabet_dir.iterdir() if p.is_dir()):
                for png in sorted(character_dir.glob("*.png")):
                    yield alphabet_dir.name, character_dir.name, str(png), png
        return
    try:
        with zipfile.ZipFile(source) as zipped:
            for info in zipped.infolist():
                parts = info.filename.split("/")
                if info.is_dir() or len(parts) != 4 or parts[0] != archive or not parts[3].lower().endswith(".png"):
                    continue
                yield parts[1], parts[2], f"{source}:{info.filename}", zipped.read(info)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as error:
        raise ValueError(
            f"{source} is not a readable zip archive ({error}); it is corrupt or was only partly downloaded. "
            f"Delete it and re-download it with `metalab data --download omniglot` (or replace it with a good copy)"
        ) from error


def _stem(source: Path) -> str:
    return source.name.removesuffix(".zip")


def _cache_file(source: Path, image_size: int) -> Path:
    return cache_dir() / f"omniglot-{_stem(source)}-{image_size}px-{source_fingerprint(source)}.pt"


def _not_found(root: Path, archives: list[str]) -> DataNotFoundError:
    where = "\n".join(
        f"  {root / 'omniglot' / (a + '.zip')}  (or the extracted folder {root / 'omniglot' / a}/)" for a in archives
    )
    downloadable = all(f"{a}.zip" in CHECKSUMS for a in archives)
    how = (
        f"run `metalab data --download omniglot --data-root {root}`"
        if downloadable
        else f"download {', '.join(f'{URL}/{a}.zip' for a in archives)} and place it there"
    )
    return DataNotFoundError(
        f"Omniglot not found under the data root {root}; expected:\n{where}\n"
        f"To fix: {how}, or point metalab at an existing copy with ${DATA_ENV} or --data-root."
    )
