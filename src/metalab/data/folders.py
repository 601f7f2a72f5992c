"""Image folders, the user's own data (one sub-folder per class), and the image decoding that every
image data set uses.

All images become uint8 [C, S, S] (C = 1: Pillow mode "L", C = 3: "RGB"), resized with Lanczos
to S x S (the aspect ratio is not kept). Grey-scale images are never inverted automatically:
pass ``invert=True`` for dark strokes on a light background (e.g. raw Omniglot-style drawings),
so that the strokes become bright as in :func:`metalab.data.omniglot.load_omniglot`.
"""
from __future__ import annotations

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
from metalab.data.store import DataNotFoundError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"})
_MODES = {1: "L", 3: "RGB"}


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


def images_in(folder: Path) -> list[Path]:
    """The image files directly in ``folder`` (an image extension, any case; hidden files skipped), sorted by name."""
    return sorted(p for p in folder.iterdir()
                  if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file() and not p.name.startswith("."))


def image_paths(paths: Sequence[str | Path]) -> list[Path]:
    """The image files that ``paths`` name: a file as given, a folder as every image directly in it, sorted by
    name (as :func:`images_in`); in the order given."""
    files: list[Path] = []
    for given in paths:
        path = Path(os.path.expanduser(given))  # Path.expanduser raises for an unknown ~user
        if not path.is_dir():
            files.append(path)
            continue
        images = images_in(path)
        if not images:
            nested = " (only sub-folders: images are read from the folder itself, not below it)" if any(
                p.is_dir() for p in path.iterdir()) else ""
            raise ValueError(f"folder {path} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))}){nested}; give "
                             f"image files, or folders that hold images")
        files.extend(images)
    return files


def load_image_files(
    paths: Sequence[str | Path], image_size: int, channels: int, invert: bool = False
) -> Tensor:
    """Preprocess individual image files (e.g. the queries to predict): uint8 [n, channels, S, S]."""
    if len(paths) == 0:
        return torch.empty(0, channels, image_size, image_size, dtype=torch.uint8)
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        raise DataNotFoundError(short_list("image files do not exist", missing))
    return torch.from_numpy(decode_images([Path(p) for p in paths], image_size, channels, invert))


def load_image_folder(
    path: str | Path, image_size: int, channels: int, name: str | None = None, invert: bool = False
) -> ClassDataset:
    """A folder with one sub-folder per class (class name = sub-folder name) as a :class:`ClassDataset`.

    Images: the files with an image extension (png/jpg/jpeg/bmp/gif/webp, any case) directly in each
    class folder; returned as uint8 [N, channels, image_size, image_size]. Classes are sorted by name.
    """
    folder = Path(os.path.expanduser(path))  # Path.expanduser raises for an unknown ~user
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
        images = images_in(class_dir)
        if not images:
            raise ValueError(
                f"class folder {class_dir} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))}); "
                f"remove the folder or add images to it"
            )
        class_items.append(list(range(len(files), len(files) + len(images))))
        files.extend(images)
    images_tensor = torch.from_numpy(decode_images(files, image_size, channels, invert))
    return ClassDataset(images_tensor, class_items, [p.name for p in class_dirs], None, name or folder.name)


def decode_images(paths: Sequence[Path], image_size: int, channels: int, invert: bool) -> np.ndarray:
    """Decode image files in a small thread pool (Pillow releases the GIL while decoding): [n, C, S, S] uint8."""
    def one(path: Path) -> np.ndarray:
        return preprocess_image(path, image_size, channels, invert, label=str(path))

    workers = min(8, os.cpu_count() or 1)
    if workers == 1 or len(paths) < 64:
        return np.stack([one(p) for p in paths])
    with ThreadPoolExecutor(workers) as pool:
        return np.stack(list(pool.map(one, paths)))


def short_list(what: str, items: list[str], shown: int = 5) -> str:
    """``what (n): a, b, ... and k more``: a message naming the first ``shown`` of ``items``."""
    more = f" ... and {len(items) - shown} more" if len(items) > shown else ""
    return f"{what} ({len(items)}): " + ", ".join(items[:shown]) + more
