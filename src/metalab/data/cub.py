"""CUB-200-2011 (Wah et al. 2011) for few-shot classification: the usual 100 / 50 / 50 class split.

The split is the one of Hilliard et al. 2018 and Chen et al. 2019 ("A closer look at few-shot classification"):
of the 200 species in their official order, train takes every second one (001, 003, ...), val and test the
remaining ones alternately (packaged as ``splits/cub/{train,val,test}.txt``). Images are the whole photographs
(no bounding-box crop), resized to ``image_size`` (84 by default, as mini-ImageNet).

The release ``CUB_200_2011.tgz`` (Caltech data repository) goes to ``<root>/cub/``; its extracted folder
``<root>/cub/CUB_200_2011/`` works too. The official layout: ``CUB_200_2011/images.txt`` (``<id> <class
folder>/<file>.jpg``), ``CUB_200_2011/images/<NNN.Species>/<file>.jpg``.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from metalab.data.archives import DamagedArchiveError, tar_members
from metalab.data.classes import ClassDataset
from metalab.data.folders import preprocess_image
from metalab.data.store import (
    DataNotFoundError,
    cache_dir,
    download_files,
    read_cache,
    release_source,
    resolve_data_root,
    source_fingerprint,
    split_list,
    write_cache,
)

URL = "https://data.caltech.edu/records/65de6-vbv73/files/CUB_200_2011.tgz"
ARCHIVE = "CUB_200_2011.tgz"
CHECKSUMS: dict[str, str | None] = {ARCHIVE: "97eceeb196236b17998738112f37df78"}
FOLDER = "CUB_200_2011"
SPLITS = ("train", "val", "test")
#: Classes per split (Chen et al. 2019, sec. 4.1).
PUBLISHED_CLASSES = {"train": 100, "val": 50, "test": 50}
_CACHE_VERSION = 1
_FIX = "Delete it and run `metalab data --download cub` (or place the official CUB_200_2011.tgz there)."


def archive_source(root: Path) -> Path | None:
    """The release under ``root``: the archive (preferred) or the extracted folder."""
    return release_source(Path(root) / "cub", ARCHIVE, FOLDER)


def download_cub(root: Path, base_url: str | None = None,
                 checksums: Mapping[str, str | None] | None = None) -> list[Path]:
    """Download ``CUB_200_2011.tgz`` (1.1 GB) into ``<root>/cub/`` (kept if already there); ``base_url`` and
    ``checksums`` replace the URL's folder and the files with their MD5s."""
    return download_files(Path(root) / "cub", base_url or URL.rsplit("/", 1)[0],
                          CHECKSUMS if checksums is None else checksums)


def load_cub(split: str, root: str | Path | None = None, image_size: int = 84) -> ClassDataset:
    """A CUB split as a :class:`ClassDataset` of uint8 [N, 3, S, S] (classes in the split list's order)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    root = resolve_data_root(root)
    source = archive_source(root)
    if source is None:
        raise DataNotFoundError(
            f"CUB-200-2011 not found: expected {root / 'cub' / ARCHIVE} (or the extracted folder "
            f"{root / 'cub' / FOLDER}/). Get it with `metalab data --download cub`, or download {URL} on a "
            f"machine with internet access and place it there.")
    classes = split_list("cub", f"{split}.txt")
    cache_file = cache_dir() / f"cub-{split}-{image_size}px-{source_fingerprint(source)}.pt"
    payload = read_cache(cache_file, _CACHE_VERSION)
    if payload is None:
        logging.getLogger(__name__).info(f"preparing CUB-200-2011 {split} (once): decoding {source} at "
                                         f"{image_size}x{image_size} px into {cache_file.parent}")
        payload = _decode(source, classes, image_size)
        write_cache(cache_file, payload)
    return ClassDataset(payload["images"], payload["class_items"], classes, None, f"cub/{split}")


def _decode(source: Path, classes: list[str], image_size: int) -> dict:
    wanted = set(classes)
    by_class: dict[str, list[tuple[str, bytes | Path]]] = {c: [] for c in classes}
    for relative, data in _images(source, wanted):
        by_class[relative.split("/", 1)[0]].append((relative, data))
    empty = [c for c in classes if not by_class[c]]
    if empty:
        raise DamagedArchiveError(f"{source} holds no images of {len(empty)} classes of the split "
                                  f"({', '.join(empty[:3])}, ...). {_FIX}")
    arrays: list[np.ndarray] = []
    class_items: list[list[int]] = []
    for name in classes:
        start = len(arrays)
        for relative, data in sorted(by_class[name], key=lambda pair: pair[0]):
            arrays.append(preprocess_image(data, image_size, channels=3, label=f"{source}:{relative}"))
        class_items.append(list(range(start, len(arrays))))
    return {"version": _CACHE_VERSION, "images": torch.from_numpy(np.stack(arrays)), "class_items": class_items}


def _images(source: Path, classes: set[str]) -> list[tuple[str, bytes | Path]]:
    """(``<class>/<file>.jpg``, bytes or path) of every image of ``classes``, from the archive or the folder."""
    prefix = f"{FOLDER}/images/"
    if source.is_dir():
        images_dir = source / "images"
        if not images_dir.is_dir():
            raise DataNotFoundError(f"{images_dir} is missing from the extracted CUB folder. {_FIX}")
        return [(f"{c}/{path.name}", path) for c in sorted(classes) if (images_dir / c).is_dir()
                for path in sorted((images_dir / c).glob("*.jpg"))]

    def wanted(member: str) -> bool:
        return member.startswith(prefix) and member[len(prefix):].split("/", 1)[0] in classes

    return [(member[len(prefix):], data) for member, data in tar_members(source, wanted, _FIX)]


def data_report(root: Path) -> list[str]:
    """CUB's lines of ``metalab data``."""
    source = archive_source(root)
    lines = ["CUB-200-2011"]
    if source is None:
        lines.append(f"  CUB_200_2011.tgz           missing; expected {root / 'cub' / ARCHIVE}")
        lines.append("  -> get it with `metalab data --download cub` (1.1 GB)")
    else:
        lines.append(f"  CUB_200_2011               found: {source}")
    counts = ", ".join(f"{s} {len(split_list('cub', f'{s}.txt'))}" for s in SPLITS)
    lines.append(f"  split lists (packaged, Chen et al. 2019): {counts} classes")
    return lines
