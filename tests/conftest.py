"""Shared fixtures: small synthetic class data sets and image folders, generated in seconds.

The helpers themselves live in ``testdata.py`` (import them from there: several test folders have
a conftest.py of their own, so importing helpers from conftest is ambiguous).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from metalab.data.classes import ClassDataset
from testdata import SHARED_DATA, make_class_dataset, write_image_folder  # noqa: F401


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Preprocessed-data caches go to one temp dir per test session, never the user's cache."""
    session_temp = str(tmp_path_factory.getbasetemp())
    if "METALAB_CACHE" not in os.environ or not os.environ["METALAB_CACHE"].startswith(session_temp):
        monkeypatch.setenv("METALAB_CACHE", str(tmp_path_factory.getbasetemp() / "metalab-cache"))


@pytest.fixture
def one_thread():
    """Torch on one intra-op thread for the test: on a shared, busy CPU two contending threads are
    many times slower than one on tiny tensors."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def class_dataset() -> ClassDataset:
    return make_class_dataset()


@pytest.fixture
def image_folders(tmp_path) -> dict[str, Path]:
    """train/val/test folders of generated classes (disjoint classes), for end-to-end runs."""
    return {
        split: write_image_folder(tmp_path / split, make_class_dataset(classes=10, items=8, seed=seed))
        for seed, split in enumerate(("train", "val", "test"))
    }


@pytest.fixture
def float64_default():
    """float64 as torch's default dtype for the test: exact agreement, not float32 rounding, is what it shows."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)
