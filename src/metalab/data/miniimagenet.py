"""mini-ImageNet (Vinyals et al. 2016, Ravi & Larochelle split): its splits, its images under the
data root, the cached tensors, and its part of ``metalab data``'s report.

Images are read from ``<root>/miniimagenet/images/<filename>.jpg``; the packaged split lists
(``splits/miniimagenet/ravi/{train,val,test}.csv``) name them. metalab cannot download them
(ImageNet licence).
"""
from __future__ import annotations

import csv
import logging
import os
from pathlib import Path

import torch

from metalab.data.classes import ClassDataset
from metalab.data.folders import decode_images, short_list
from metalab.data.store import (
    DataNotFoundError,
    cache_dir,
    fingerprint,
    read_cache,
    resolve_data_root,
    split_list,
    write_cache,
)

SPLITS = ("train", "val", "test")
_CACHE_VERSION = 1


def images_folder(root: Path) -> Path:
    """Where the images are expected: ``<root>/miniimagenet/images``."""
    return Path(root) / "miniimagenet" / "images"


def how_to_get(root: Path) -> str:
    """What to do instead of a download (there is none)."""
    return f"place its images as {images_folder(root)}/<filename>.jpg"


def read_split_csv(split_file: str | Path | None, split: str) -> list[tuple[str, str]]:
    """(filename, label) rows of a mini-ImageNet split CSV (``filename,label`` header); packaged Ravi list by
    default."""
    if split_file is None:
        if split not in SPLITS:
            raise ValueError(f"unknown mini-ImageNet split {split!r}; valid splits: {', '.join(SPLITS)}")
        lines = split_list("miniimagenet", "ravi", f"{split}.csv")
        source = f"the packaged Ravi {split}.csv"
    else:
        if not Path(split_file).is_file():
            raise DataNotFoundError(f"split file {split_file} does not exist")
        lines = Path(split_file).read_text(encoding="utf-8").splitlines()
        source = str(split_file)
    rows = list(csv.reader(lines))
    if not rows or [c.strip() for c in rows[0]] != ["filename", "label"]:
        raise ValueError(f"{source} must be a CSV with the header 'filename,label'")
    body = [(r[0].strip(), r[1].strip()) for r in rows[1:] if r]
    if not body:
        raise ValueError(f"{source} lists no images")
    return body


def load_miniimagenet(
    split: str, root: str | Path | None = None, image_size: int = 84, split_file: str | Path | None = None
) -> ClassDataset:
    """mini-ImageNet (Ravi & Larochelle layout) as a :class:`ClassDataset` of uint8 [N, 3, S, S].

    Images are read from ``<root>/miniimagenet/images/<filename>``; the split lists the
    ``filename,label`` rows (the packaged Ravi ``train``/``val``/``test`` CSVs, or ``split_file``).
    Classes are the labels in order of first appearance. Decoded once, then cached in :func:`cache_dir`.
    """
    rows = read_split_csv(split_file, split)
    images_dir = images_folder(resolve_data_root(root))
    paths = [images_dir / filename for filename, _ in rows]
    stats, missing = [], []
    for path in paths:
        try:
            stat = path.stat()
            stats.append((stat.st_size, stat.st_mtime_ns))
        except FileNotFoundError:
            missing.append(str(path))
    if missing:
        raise DataNotFoundError(
            short_list(f"mini-ImageNet {split}: images missing from {images_dir}", missing)
            + f"\nPlace the mini-ImageNet images as {images_dir}/<filename>.jpg (names as in the split CSV), "
            f"or point metalab at an existing copy with $METALAB_DATA or --data-root."
        )
    key = fingerprint(str(images_dir.resolve()), rows, stats)
    cache_file = cache_dir() / f"miniimagenet-{split}-{image_size}px-{key}.pt"
    name = f"miniimagenet/{split}"
    payload = read_cache(cache_file, _CACHE_VERSION)
    if payload is not None:
        return ClassDataset(payload["images"], payload["class_items"], payload["class_names"], None, name)
    labels: dict[str, list[int]] = {}
    for index, (_, label) in enumerate(rows):
        labels.setdefault(label, []).append(index)
    logging.getLogger(__name__).info(f"preparing mini-ImageNet {split} (once): decoding {len(paths)} images at "
                                     f"{image_size}x{image_size} px into {cache_file.parent}; "
                                     f"later runs read the cache")
    images = torch.from_numpy(decode_images(paths, image_size, 3, invert=False))
    payload = {"version": _CACHE_VERSION, "images": images, "class_items": list(labels.values()),
               "class_names": list(labels)}
    write_cache(cache_file, payload)
    return ClassDataset(images, payload["class_items"], payload["class_names"], None, name)


def cached_sizes(split: str) -> list[int]:
    """Image sizes with a mini-ImageNet cache file for ``split`` (not checked against the images)."""
    sizes = {path.name.split("-")[2].removesuffix("px") for path in cache_dir().glob(f"miniimagenet-{split}-*px-*.pt")}
    return sorted(int(s) for s in sizes if s.isdigit())


def data_report(root: Path) -> list[str]:
    """mini-ImageNet's lines of ``metalab data``: images present per split (and caches), how to get the rest."""
    lines = ["mini-ImageNet"]
    images_dir = images_folder(root)
    present = set(os.listdir(images_dir)) if images_dir.is_dir() else set()
    incomplete = False
    for split in SPLITS:
        names = [row[0] for row in read_split_csv(None, split)]
        found = sum(name in present for name in names)
        sizes = cached_sizes(split)
        cached = f"; cached at {', '.join(f'{s}px' for s in sizes)}" if sizes else ""
        state = "complete" if found == len(names) else ("missing" if found == 0 else "incomplete")
        incomplete = incomplete or found < len(names)
        lines.append(f"  {split:<5} (Ravi split, packaged): {found}/{len(names)} images present ({state}){cached}")
    if incomplete:
        lines.append(f"  -> to get them: place the images as {images_dir}/<filename>.jpg "
                     f"(file names as in the split CSVs);")
        lines.append("     metalab cannot download mini-ImageNet (ImageNet licence)")
    return lines
