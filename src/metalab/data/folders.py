"""Image folders: the user's own data (one sub-folder per class) and mini-ImageNet (Ravi & Larochelle split).

All images become uint8 [C, S, S] (C = 1: Pillow mode "L", C = 3: "RGB"), resized with Lanczos
to S x S (the aspect ratio is not kept). Grey-scale images are never inverted automatically:
pass ``invert=True`` for dark strokes on a light background (e.g. raw Omniglot-style drawings),
so that the strokes become bright as in :func:`metalab.data.omniglot.load_omniglot`.
"""
from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from metalab.data.classes import ClassDataset
from metalab.data.store import (
    MINIIMAGENET_SPLITS,
    DataNotFoundError,
    cache_dir,
    fingerprint,
    resolve_data_root,
    split_list,
)
from metalab.utils.io import atomic_torch_save

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"})
_MODES = {1: "L", 3: "RGB"}
_CACHE_VERSION = 1


def preprocess_image(
    source: bytes | str | Path, image_size: int, channels: int, invert: bool = False, label: str | None = None
) -> np.ndarray:
    """Decode one image (file path or encoded bytes) to uint8 [channels, image_size, image_size].

    Converts to "L" (channels=1) or "RGB" (channels=3), optionally inverts, then resizes with Lanczos.
    A missing file raises :class:`DataNotFoundError`, an undecodable one ``ValueError``; both name ``label``.
    """
    if channels not in _MODES:
        raise ValueError(f"channels must be 1 (grey-scale) or 3 (RGB), got {channels}")
    label = label or str(source if not isinstance(source, bytes) else "<image bytes>")
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as opened:
            image = opened.convert(_MODES[channels])
            if invert:
                image = ImageOps.invert(image)
            if image.size != (image_size, image_size):
                image = image.resize((image_size, image_size), Image.Resampling.LANCZOS)
            array = np.asarray(image, dtype=np.uint8)
    except FileNotFoundError:
        raise DataNotFoundError(f"image file {label} does not exist") from None
    except PermissionError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ValueError(
            f"cannot decode image {label} ({type(error).__name__}: {error}); the file is corrupt or not an image: "
            f"replace it (re-download the data set) or remove it"
        ) from error
    return array[None] if channels == 1 else array.transpose(2, 0, 1).copy()


def load_image_files(
    paths: Sequence[str | Path], image_size: int, channels: int, invert: bool = False
) -> Tensor:
    """Preprocess individual image files (e.g. the queries to predict): uint8 [n, channels, S, S]."""
    if len(paths) == 0:
        return torch.empty(0, channels, image_size, image_size, dtype=torch.uint8)
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        raise DataNotFoundError(_first_few("image files do not exist", missing))
    return torch.from_numpy(_decode_all([Path(p) for p in paths], image_size, channels, invert))


def load_image_folder(
    path: str | Path, image_size: int, channels: int, name: str | None = None, invert: bool = False
) -> ClassDataset:
    """A folder with one sub-folder per class (class name = sub-folder name) as a :class:`ClassDataset`.

    Images: the files with an image extension (png/jpg/jpeg/bmp/gif/webp, any case) directly in each
    class folder; returned as uint8 [N, channels, image_size, image_size]. Classes are sorted by name.
    """
    folder = Path(path).expanduser()
    if not folder.exists():
        raise DataNotFoundError(f"image folder {folder} does not exist; give a folder with one sub-folder per class")
    if not folder.is_dir():
        raise ValueError(f"{folder} is a file, not a folder; give a folder with one sub-folder per class")
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise ValueError(
            f"{folder} has no class sub-folders; put the images of each class in their own sub-folder "
            f"({folder}/<class name>/<image>.png)"
        )
    files: list[Path] = []
    class_items: list[list[int]] = []
    for class_dir in class_dirs:
        images = sorted(
            p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file() and not p.name.startswith(".")
        )
        if not images:
            raise ValueError(
                f"class folder {class_dir} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))}); "
                f"remove the folder or add images to it"
            )
        class_items.append(list(range(len(files), len(files) + len(images))))
        files.extend(images)
    images_tensor = torch.from_numpy(_decode_all(files, image_size, channels, invert))
    return ClassDataset(images_tensor, class_items, [p.name for p in class_dirs], None, name or folder.name)


def read_split_csv(split_file: str | Path | None, split: str) -> list[tuple[str, str]]:
    """(filename, label) rows of a mini-ImageNet split CSV (``filename,label`` header); packaged Ravi list by default."""
    if split_file is None:
        if split not in MINIIMAGENET_SPLITS:
            raise ValueError(f"unknown mini-ImageNet split {split!r}; valid splits: {', '.join(MINIIMAGENET_SPLITS)}")
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
    data_root = resolve_data_root(root)
    images_dir = data_root / "miniimagenet" / "images"
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
            _first_few(f"mini-ImageNet {split}: images missing from {images_dir}", missing)
            + f"\nPlace the mini-ImageNet images as {images_dir}/<filename>.jpg (names as in the split CSV), "
            f"or point metalab at an existing copy with $METALAB_DATA or --data-root."
        )
    key = fingerprint(str(images_dir.resolve()), rows, stats)
    cache_file = cache_dir() / f"miniimagenet-{split}-{image_size}px-{key}.pt"
    name = f"miniimagenet/{split}"
    if cache_file.is_file():
        try:
            payload = torch.load(cache_file, weights_only=True)
            if payload.get("version") == _CACHE_VERSION:
                return ClassDataset(payload["images"], payload["class_items"], payload["class_names"], None, name)
        except Exception:  # unreadable cache: rebuild it
            pass
    labels: dict[str, list[int]] = {}
    for index, (_, label) in enumerate(rows):
        labels.setdefault(label, []).append(index)
    images = torch.from_numpy(_decode_all(paths, image_size, 3, invert=False))
    payload = {"version": _CACHE_VERSION, "images": images, "class_items": list(labels.values()), "class_names": list(labels)}
    atomic_torch_save(payload, cache_file)
    return ClassDataset(images, payload["class_items"], payload["class_names"], None, name)


def cached_miniimagenet_sizes(split: str) -> list[int]:
    """Image sizes with a mini-ImageNet cache file for ``split`` (not checked against the images)."""
    sizes = {path.name.split("-")[2].removesuffix("px") for path in cache_dir().glob(f"miniimagenet-{split}-*px-*.pt")}
    return sorted(int(s) for s in sizes if s.isdigit())


def _decode_all(paths: Sequence[Path], image_size: int, channels: int, invert: bool) -> np.ndarray:
    """Decode files in a small thread pool (Pillow releases the GIL while decoding): [n, C, S, S] uint8."""
    def one(path: Path) -> np.ndarray:
        return preprocess_image(path, image_size, channels, invert, label=str(path))

    workers = min(8, os.cpu_count() or 1)
    if workers == 1 or len(paths) < 64:
        return np.stack([one(p) for p in paths])
    with ThreadPoolExecutor(workers) as pool:
        return np.stack(list(pool.map(one, paths)))


def _first_few(what: str, items: list[str], shown: int = 5) -> str:
    more = f" ... and {len(items) - shown} more" if len(items) > shown else ""
    return f"{what} ({len(items)}): " + ", ".join(items[:shown]) + more
