"""Shared fixtures: small synthetic class data sets and image folders, generated in seconds."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from metalab.data.classes import ClassDataset

SHARED_DATA = Path(os.environ.get("METALAB_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Preprocessed-data caches go to one temp dir per test session, never the user's cache."""
    if "METALAB_CACHE" not in os.environ or not os.environ["METALAB_CACHE"].startswith(str(tmp_path_factory.getbasetemp())):
        monkeypatch.setenv("METALAB_CACHE", str(tmp_path_factory.getbasetemp() / "metalab-cache"))


def make_class_dataset(classes: int = 12, items: int = 8, size: int = 28, channels: int = 1,
                       groups: int = 3, seed: int = 0) -> ClassDataset:
    """Classes of noisy copies of one random template each: learnable, tiny, deterministic."""
    generator = torch.Generator().manual_seed(seed)
    templates = torch.rand(classes, channels, size, size, generator=generator)
    noise = 0.3 * torch.rand(classes, items, channels, size, size, generator=generator)
    images = ((0.7 * templates.unsqueeze(1) + noise).clamp(0, 1) * 255).to(torch.uint8).flatten(0, 1)
    class_items = [list(range(c * items, (c + 1) * items)) for c in range(classes)]
    names = [f"group{c % groups}/class{c:02d}" for c in range(classes)]
    return ClassDataset(images, class_items, names, [f"group{c % groups}" for c in range(classes)], "synthetic")


@pytest.fixture
def class_dataset() -> ClassDataset:
    return make_class_dataset()


def write_image_folder(root: Path, dataset: ClassDataset, rgb: bool = False) -> Path:
    """Write a ClassDataset as <root>/<class>/<i>.png (one sub-folder per class)."""
    for c, name in enumerate(dataset.class_names):
        folder = root / name.replace("/", "_")
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(dataset.items_in(c)):
            pixels = (dataset.get(c, [i])[0, 0].numpy() * 255).astype(np.uint8)
            image = Image.fromarray(pixels, mode="L")
            (image.convert("RGB") if rgb else image).save(folder / f"{i:03d}.png")
    return root


@pytest.fixture
def image_folders(tmp_path) -> dict[str, Path]:
    """train/val/test folders of generated classes (disjoint classes), for end-to-end runs."""
    return {
        split: write_image_folder(tmp_path / split, make_class_dataset(classes=10, items=8, seed=seed))
        for seed, split in enumerate(("train", "val", "test"))
    }
