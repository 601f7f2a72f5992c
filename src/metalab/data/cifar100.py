"""CIFAR-FS (Bertinetto et al. 2019) and FC100 (Oreshkin et al. 2018): the few-shot splits of CIFAR-100.

Both use all 600 images (CIFAR-100's train and test batches together) of each of the 100 classes, 32x32 RGB:

- CIFAR-FS: random classes, 64 train / 16 val / 20 test (the packaged ``splits/cifar100/cifar-fs`` lists, as
  ``superclass/class``);
- FC100: whole superclasses, 12 / 4 / 4 of the 20 (60 / 20 / 20 classes; ``splits/cifar100/fc100``), so that
  test classes share no superclass with training ones. Each class's group is its superclass.

The images come from the official release ``cifar-100-python.tar.gz`` (Krizhevsky 2009), which metalab
downloads into ``<root>/cifar100/``; the extracted folder ``<root>/cifar100/cifar-100-python/`` works too.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional

from metalab.data.archives import DamagedArchiveError, load_data_pickle, pickle_from_bytes, tar_members
from metalab.data.classes import ClassDataset
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

URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
ARCHIVE = "cifar-100-python.tar.gz"
CHECKSUMS: dict[str, str | None] = {ARCHIVE: "eb9058c3a382ffc7106e4002c42a8d85"}
FOLDER = "cifar-100-python"
SPLITS = ("train", "val", "test")
#: Classes per split in the papers: CIFAR-FS (Bertinetto et al. 2019, sec. 4), FC100 (Oreshkin et al. 2018, sec. 5).
PUBLISHED_CLASSES = {"cifar-fs": {"train": 64, "val": 16, "test": 20}, "fc100": {"train": 60, "val": 20, "test": 20}}
_BATCHES = ("train", "test", "meta")
_CACHE_VERSION = 1
_FIX = "Delete it and run `metalab data --download cifar100` (or place the official cifar-100-python.tar.gz there)."


def archive_source(root: Path) -> Path | None:
    """The release under ``root``: the archive (preferred: a complete download is atomic) or the extracted folder."""
    return release_source(Path(root) / "cifar100", ARCHIVE, FOLDER)


def download_cifar100(root: Path, base_url: str | None = None,
                      checksums: Mapping[str, str | None] | None = None) -> list[Path]:
    """Download ``cifar-100-python.tar.gz`` into ``<root>/cifar100/`` (kept if already there).

    ``base_url`` replaces the URL's folder (a mirror); ``checksums`` ({file name: MD5 or None}) the file and its MD5.
    """
    return download_files(Path(root) / "cifar100", base_url or URL.rsplit("/", 1)[0],
                          CHECKSUMS if checksums is None else checksums)


def load_cifar_fs(split: str, root: str | Path | None = None, image_size: int = 32) -> ClassDataset:
    """A CIFAR-FS split as a :class:`ClassDataset` of uint8 [600 * classes, 3, S, S], grouped by superclass."""
    _check_split(split)
    wanted = [line.split("/", 1) for line in split_list("cifar100", "cifar-fs", f"{split}.txt")]
    return _split_dataset(root, image_size, [fine for _, fine in wanted], f"cifar-fs/{split}")


def load_fc100(split: str, root: str | Path | None = None, image_size: int = 32) -> ClassDataset:
    """An FC100 split (the classes of its superclasses) as a :class:`ClassDataset`, grouped by superclass."""
    _check_split(split)
    superclasses = set(split_list("cifar100", "fc100", f"{split}.txt"))
    release = _release(resolve_data_root(root), image_size)
    fine = [name for name, coarse in zip(release["fine_names"], release["coarse_of_fine"])
            if release["coarse_names"][coarse] in superclasses]
    return _split_dataset(root, image_size, fine, f"fc100/{split}", release)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")


def _split_dataset(root: str | Path | None, image_size: int, classes: list[str], name: str,
                   release: dict | None = None) -> ClassDataset:
    release = release or _release(resolve_data_root(root), image_size)
    index = {fine: i for i, fine in enumerate(release["fine_names"])}
    unknown = [c for c in classes if c not in index]
    if unknown:
        raise DamagedArchiveError(f"the CIFAR-100 release lacks classes of {name}: {', '.join(unknown[:5])}. {_FIX}")
    labels = release["fine_labels"]
    items = [torch.nonzero(labels == index[c]).flatten() for c in classes]
    groups = [release["coarse_names"][int(release["coarse_of_fine"][index[c]])] for c in classes]
    return ClassDataset(release["images"], items, classes, groups, name)


def _release(root: Path, image_size: int) -> dict:
    """All 60000 images [N, 3, S, S] uint8 with fine labels [N], the 100 fine and 20 coarse names and each fine
    class's coarse label; decoded once into the cache."""
    source = archive_source(root)
    if source is None:
        raise DataNotFoundError(
            f"CIFAR-100 not found: expected {root / 'cifar100' / ARCHIVE} (or the extracted folder "
            f"{root / 'cifar100' / FOLDER}/). Get it with `metalab data --download cifar100`, or download {URL} "
            f"on a machine with internet access and place it there.")
    cache_file = cache_dir() / f"cifar100-{image_size}px-{source_fingerprint(source)}.pt"
    payload = read_cache(cache_file, _CACHE_VERSION)
    if payload is not None:
        return payload
    logging.getLogger(__name__).info(f"preparing CIFAR-100 (once): decoding {source} at {image_size}x{image_size} "
                                     f"px into {cache_file.parent}; later runs read the cache")
    batches = _read_batches(source)
    meta = batches["meta"]
    images = np.concatenate([np.asarray(batches[b]["data"], dtype=np.uint8) for b in ("train", "test")])
    fine = np.concatenate([np.asarray(batches[b]["fine_labels"]) for b in ("train", "test")])
    coarse = np.concatenate([np.asarray(batches[b]["coarse_labels"]) for b in ("train", "test")])
    fine_names, coarse_names = list(meta["fine_label_names"]), list(meta["coarse_label_names"])
    if images.ndim != 2 or images.shape[1] != 3 * 32 * 32 or len(fine) != len(images):
        raise DamagedArchiveError(f"{source}: the batches do not hold [N, 3072] images with one label each. {_FIX}")
    coarse_of_fine = np.zeros(len(fine_names), dtype=np.int64)
    coarse_of_fine[fine] = coarse
    tensor = torch.from_numpy(images.reshape(-1, 3, 32, 32))
    if image_size != 32:
        tensor = functional.interpolate(tensor.float(), size=(image_size, image_size), mode="bilinear",
                                        antialias=True, align_corners=False).round().clamp(0, 255).to(torch.uint8)
    payload = {"version": _CACHE_VERSION, "images": tensor, "fine_labels": torch.from_numpy(fine.astype(np.int64)),
               "fine_names": fine_names, "coarse_names": coarse_names,
               "coarse_of_fine": torch.from_numpy(coarse_of_fine)}
    write_cache(cache_file, payload)
    return payload


def _read_batches(source: Path) -> dict[str, dict]:
    """The ``train``, ``test`` and ``meta`` pickles of the release, from the archive or the extracted folder."""
    if source.is_dir():
        batches = {}
        for name in _BATCHES:
            path = source / name
            if not path.is_file():
                raise DataNotFoundError(f"{path} is missing from the extracted CIFAR-100 folder. {_FIX}")
            with open(path, "rb") as file:
                batches[name] = load_data_pickle(file, str(path), _FIX)
        return batches
    wanted = {f"{FOLDER}/{name}" for name in _BATCHES}
    found = {member.rsplit("/", 1)[1]: pickle_from_bytes(data, f"{source}:{member}", _FIX)
             for member, data in tar_members(source, wanted.__contains__, _FIX)}
    missing = [name for name in _BATCHES if name not in found]
    if missing:
        raise DamagedArchiveError(f"{source} lacks {', '.join(f'{FOLDER}/{m}' for m in missing)}. {_FIX}")
    return found


def data_report(root: Path) -> list[str]:
    """CIFAR-FS and FC100's lines of ``metalab data``."""
    source = archive_source(root)
    counts = {dataset: ", ".join(f"{s} {n}" for s, n in splits.items()) for dataset, splits in
              PUBLISHED_CLASSES.items()}
    lines = ["CIFAR-FS and FC100 (from CIFAR-100)"]
    if source is None:
        lines.append(f"  cifar-100-python.tar.gz    missing; expected {root / 'cifar100' / ARCHIVE}")
        lines.append("  -> get it with `metalab data --download cifar100`")
    else:
        lines.append(f"  cifar-100-python           found: {source}")
    lines.append(f"  split lists (packaged): CIFAR-FS {counts['cifar-fs']}; FC100 {counts['fc100']} classes")
    return lines
