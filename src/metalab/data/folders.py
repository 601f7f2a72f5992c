"""Image folders, the user's own data (one sub-folder per class), and the image decoding that every
image data set uses.

All images become uint8 [C, S, S] (C = 1: Pillow mode "L", C = 3: "RGB"), resized with Lanczos
to S x S (the aspect ratio is not kept). Transparent pixels (modes RGBA, LA, PA, a palette with a transparent
colour) are laid on white first, as a viewer shows them; 16-bit grey-scale is scaled to 8 bits. Grey-scale images are
never inverted automatically: pass ``invert=True`` for dark strokes on a light background (e.g. raw Omniglot-style
drawings), so that the strokes become bright as in :func:`metalab.data.omniglot.load_omniglot`.
:func:`conversion_of` says in words what :func:`preprocess_image` does to a given file.
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

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
_MODES = {1: "L", 3: "RGB"}
_MODE_NAMES = {"L": "grayscale", "RGB": "RGB", "1": "1-bit", "P": "palette", "PA": "palette+alpha",
               "LA": "grayscale+alpha", "I;16": "16-bit grayscale", "I": "32-bit grayscale", "F": "float grayscale"}
#: Pillow modes of 16- and 32-bit integer grey-scale (a 16-bit PNG opens as "I;16" or "I")
_WIDE_GREY = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})


def has_transparency(image: Image.Image) -> bool:
    """Whether ``image`` has an alpha channel or a transparent palette colour."""
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info


def to_mode(image: Image.Image, mode: str) -> Image.Image:
    """``image`` in Pillow mode ``mode`` ("L" or "RGB"): transparent pixels on white, 16-bit grey scaled to 8 bits.

    Raises ``ValueError`` when Pillow has no conversion from the image's mode (e.g. "LAB" to "L").
    """
    if image.mode in _WIDE_GREY:  # Pillow's own conversion clips every value above 255 to white
        wide = np.asarray(image, dtype=np.int64)
        image = Image.fromarray((wide >> (16 if image.mode == "I" and wide.max() > 65535 else 8)).clip(0, 255)
                                .astype(np.uint8), mode="L")
    if has_transparency(image):
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return image.convert(mode)


def conversion_of(path: str | Path, image_size: int, channels: int, inverted: str | None = None) -> str | None:
    """What :func:`preprocess_image` does to the image file ``path``, in words (None: nothing), read from its header
    only, e.g. ``"RGBA -> grayscale 28x28 (transparent pixels on white), inverted to match Omniglot strokes"``.

    ``inverted``: the reason given for inverting (None: not inverted). Images that differ only in size give the same
    words, so that a caller can report each kind of conversion once.
    """
    with Image.open(path) as image:
        mode, size = image.mode, image.size
        transparent = has_transparency(image)
    target = _MODES[channels]
    if mode == target and size == (image_size, image_size) and inverted is None:
        return None
    notes = [*(["transparent pixels on white"] if transparent else []),
             *(["scaled to 8 bits"] if mode in _WIDE_GREY else [])]
    words = f"{_MODE_NAMES.get(mode, mode)} -> {_MODE_NAMES[target]} {image_size}x{image_size}"
    words += f" ({', '.join(notes)})" if notes else ""
    return words + (f", inverted {inverted}" if inverted else "")


class UnconvertibleImageError(ValueError):
    """An image decodes, but its mode (channels) has no conversion to what the learner reads."""


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
            try:
                image = to_mode(opened, _MODES[channels])
            except ValueError as error:
                raise UnconvertibleImageError(
                    f"image {label} has mode {opened.mode} ({len(opened.getbands())} channels), which cannot be "
                    f"converted to {_MODE_NAMES[_MODES[channels]]} ({error}): save it as an 8-bit grayscale or RGB "
                    f"PNG or JPEG, or remove it") from None
            if invert:
                image = ImageOps.invert(image)
            if image.size != (image_size, image_size):
                image = image.resize((image_size, image_size), Image.Resampling.LANCZOS)
            array = np.asarray(image, dtype=np.uint8)
    except FileNotFoundError:
        raise DataNotFoundError(f"image file {label} does not exist") from None
    except (PermissionError, UnconvertibleImageError):
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ValueError(
            f"cannot decode image {label} ({type(error).__name__}: {error}); the file is corrupt or not an image: "
            f"replace it (re-download the data set) or remove it"
        ) from error
    return array[None] if channels == 1 else array.transpose(2, 0, 1).copy()


def images_in(folder: Path, recursive: bool = False) -> list[Path]:
    """The image files in ``folder`` (an image extension, any case; hidden files skipped), sorted by name; with
    ``recursive``, those of its sub-folders too (hidden folders skipped), sorted by their path below ``folder``."""
    found = []
    for directory, folders, names in os.walk(folder) if recursive else [(str(folder), [], os.listdir(folder))]:
        folders[:] = [name for name in folders if not name.startswith(".")]
        found += [Path(directory) / name for name in names
                  if Path(name).suffix.lower() in IMAGE_EXTENSIONS and not name.startswith(".")]
    return sorted((p for p in found if p.is_file()), key=lambda p: p.relative_to(folder).parts)


def image_paths(paths: Sequence[str | Path]) -> list[Path]:
    """The image files that ``paths`` name: a file as given, a folder as every image in it and in its sub-folders
    (:func:`images_in` with ``recursive``); in the order given."""
    files: list[Path] = []
    for given in paths:
        path = Path(os.path.expanduser(given))  # Path.expanduser raises for an unknown ~user
        if not path.is_dir():
            files.append(path)
            continue
        images = images_in(path, recursive=True)
        if not images:
            raise ValueError(f"folder {path} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))}), neither in it "
                             f"nor in its sub-folders; give image files, or folders that hold images")
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

    Images: the files with an image extension (png/jpg/jpeg/bmp/gif/webp/tif/tiff, any case) directly in each
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
