"""``speed.reuse_freed_memory`` tunes glibc's malloc for the whole process: the ``metalab train`` and
``metalab eval`` commands apply it, a :class:`Trainer` used from Python leaves its host's allocator alone."""
from __future__ import annotations

import ctypes
from pathlib import Path
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from metalab.accel import allocator
from metalab.cli import main
from metalab.config import load_recipe
from metalab.train.trainer import Trainer
from test_trainer import folder_config


def recipe(folders: dict[str, Path], run_dir: Path, *overrides: str) -> Path:
    """A YAML recipe (what ``metalab train`` reads) of a short run on the generated folders."""
    path = run_dir.with_suffix(".yaml")
    OmegaConf.save(folder_config(folders, run_dir, steps=2, **dict(o.split("=") for o in overrides)), path)
    return path


@pytest.fixture
def mallopt_calls(monkeypatch) -> list[tuple[int, int]]:
    """The mallopt calls of this test, recorded by a stand-in glibc seen by metalab.accel.allocator alone,
    however its caller reached :func:`~metalab.accel.allocator.reuse_freed_memory`."""
    calls: list[tuple[int, int]] = []

    def mallopt(parameter: int, value: int) -> int:
        calls.append((parameter, value))
        return 1

    libc = SimpleNamespace(mallopt=mallopt, gnu_get_libc_version=lambda: b"2.36")
    monkeypatch.setattr(allocator, "sys", SimpleNamespace(platform="linux"))
    monkeypatch.setattr(allocator, "ctypes", SimpleNamespace(
        CDLL=lambda name: libc, util=SimpleNamespace(find_library=lambda name: "libc.so.6"), c_int=ctypes.c_int))
    allocator.reuse_freed_memory.cache_clear()
    yield calls
    allocator.reuse_freed_memory.cache_clear()


def test_the_commands_apply_it_and_the_python_trainer_does_not(image_folders, tmp_path, mallopt_calls):
    Trainer(load_recipe(str(recipe(image_folders, tmp_path / "python")))).fit()
    assert mallopt_calls == []
    assert main(["train", str(recipe(image_folders, tmp_path / "cli"))]) == 0
    assert len(mallopt_calls) == 2  # the mmap and trim thresholds
    allocator.reuse_freed_memory.cache_clear()
    assert main(["eval", str(tmp_path / "cli"), "--episodes", "5"]) == 0
    assert len(mallopt_calls) == 4
    allocator.reuse_freed_memory.cache_clear()
    assert main(["train", str(recipe(image_folders, tmp_path / "off", "speed.reuse_freed_memory=false"))]) == 0
    assert len(mallopt_calls) == 4
