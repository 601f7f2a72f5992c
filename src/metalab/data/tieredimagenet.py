"""tiered-ImageNet (Ren et al. 2018): 608 ImageNet classes under 34 high-level categories, split by category
(20 / 6 / 8 categories: 351 / 97 / 160 classes), so that test classes are far from training ones.

The packaged split lists (``splits/tieredimagenet/ren/{train,val,test}.csv``, rows ``<synset>,<category
synset>``) are the authors'. Each class's group is its category, for within-category episodes.

Images are read from the authors' release (``tiered-imagenet.tar``, extracted): for each split,
``<root>/tieredimagenet/<split>_images_png.pkl`` (a list of PNG-encoded 84x84 RGB images) and
``<split>_labels.pkl`` (a dict with ``label_specific`` [N], the image's class index into
``label_specific_str``, the class synsets). metalab cannot download them (ImageNet licence).
"""
from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import torch

from metalab.data.archives import DamagedArchiveError, load_data_pickle
from metalab.data.classes import ClassDataset
from metalab.data.folders import preprocess_image
from metalab.data.store import (
    DataNotFoundError,
    cache_dir,
    fingerprint,
    read_cache,
    resolve_data_root,
    source_fingerprint,
    split_list,
    write_cache,
)

SPLITS = ("train", "val", "test")
#: (classes, categories) per split (Ren et al. 2018, sec. 5.1).
PUBLISHED = {"train": (351, 20), "val": (97, 6), "test": (160, 8)}
_CACHE_VERSION = 1
_FIX = ("Replace it with the file of the authors' release (tiered-imagenet.tar, linked from "
        "github.com/renmengye/few-shot-ssl-public).")


def folder(root: Path) -> Path:
    return Path(root) / "tieredimagenet"


def split_files(root: Path, split: str) -> tuple[Path, Path]:
    """(images pickle, labels pickle) of ``split`` under the data root."""
    return folder(root) / f"{split}_images_png.pkl", folder(root) / f"{split}_labels.pkl"


def class_categories(split: str) -> dict[str, str]:
    """The packaged split list: class synset -> category synset, in the authors' order."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    return {row[0]: row[1] for row in csv.reader(split_list("tieredimagenet", "ren", f"{split}.csv"))}


def load_tieredimagenet(split: str, root: str | Path | None = None, image_size: int = 84) -> ClassDataset:
    """A tiered-ImageNet split as a :class:`ClassDataset` of uint8 [N, 3, S, S], grouped by category."""
    categories = class_categories(split)
    root = resolve_data_root(root)
    images_file, labels_file = split_files(root, split)
    missing = [str(p) for p in (images_file, labels_file) if not p.is_file()]
    if missing:
        raise DataNotFoundError(
            f"tiered-ImageNet {split}: missing {', '.join(missing)}. metalab cannot download tiered-ImageNet "
            f"(ImageNet licence): extract the authors' tiered-imagenet.tar (github.com/renmengye/few-shot-ssl-public)"
            f" and place its {split}_images_png.pkl and {split}_labels.pkl in {folder(root)}/")
    key = fingerprint(source_fingerprint(images_file), source_fingerprint(labels_file))
    cache_file = cache_dir() / f"tieredimagenet-{split}-{image_size}px-{key}.pt"
    payload = read_cache(cache_file, _CACHE_VERSION)
    if payload is None:
        logging.getLogger(__name__).info(f"preparing tiered-ImageNet {split} (once): decoding {images_file} at "
                                         f"{image_size}x{image_size} px into {cache_file.parent}")
        payload = _decode(images_file, labels_file, list(categories), image_size)
        write_cache(cache_file, payload)
    classes = list(categories)
    return ClassDataset(payload["images"], payload["class_items"], classes, [categories[c] for c in classes],
                        f"tieredimagenet/{split}")


def _decode(images_file: Path, labels_file: Path, classes: list[str], image_size: int) -> dict:
    with open(labels_file, "rb") as file:
        labels = load_data_pickle(file, str(labels_file), _FIX)
    if not isinstance(labels, dict) or not {"label_specific", "label_specific_str"} <= set(labels):
        raise DamagedArchiveError(f"{labels_file} is not a tiered-ImageNet labels file (a dict with "
                                  f"label_specific and label_specific_str). {_FIX}")
    names = [str(n) for n in labels["label_specific_str"]]
    if set(names) != set(classes):
        extra, absent = sorted(set(names) - set(classes)), sorted(set(classes) - set(names))
        raise DamagedArchiveError(f"{labels_file} does not hold the classes of the split list (not in the list: "
                                  f"{extra[:3]}; missing: {absent[:3]}). {_FIX}")
    with open(images_file, "rb") as file:
        encoded = load_data_pickle(file, str(images_file), _FIX)
    specific = np.asarray(labels["label_specific"])
    if len(encoded) != len(specific):
        raise DamagedArchiveError(f"{images_file} holds {len(encoded)} images for {len(specific)} labels in "
                                  f"{labels_file}. {_FIX}")
    arrays = [preprocess_image(bytes(np.asarray(png, dtype=np.uint8)), image_size, channels=3,
                               label=f"{images_file}[{i}]") for i, png in enumerate(encoded)]
    position = {name: i for i, name in enumerate(names)}
    class_items = [np.flatnonzero(specific == position[c]).tolist() for c in classes]
    return {"version": _CACHE_VERSION, "images": torch.from_numpy(np.stack(arrays)), "class_items": class_items}


def data_report(root: Path) -> list[str]:
    """tiered-ImageNet's lines of ``metalab data``."""
    lines = ["tiered-ImageNet"]
    absent = False
    for split in SPLITS:
        found = [p.name for p in split_files(root, split) if p.is_file()]
        classes, categories = PUBLISHED[split]
        state = "found" if len(found) == 2 else ("missing" if not found else f"incomplete ({', '.join(found)})")
        absent = absent or len(found) < 2
        lines.append(f"  {split:<5} (Ren split, packaged: {classes} classes in {categories} categories): {state}")
    if absent:
        lines.append(f"  -> place <split>_images_png.pkl and <split>_labels.pkl of the authors' tiered-imagenet.tar "
                     f"in {folder(root)}/; metalab cannot download tiered-ImageNet (ImageNet licence)")
    return lines
