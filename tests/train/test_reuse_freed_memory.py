"""``speed.reuse_freed_memory`` tunes glibc's malloc for the whole process: the ``metalab train`` and
``metalab eval`` commands apply it, a :class:`Trainer` used from Python leaves its host's allocator alone."""
from __future__ import annotations

import ctypes
from pathlib import Path
from types import SimpleNamespace

import pytest

from metalab.accel import allocator
from metalab.cli import main
from metalab.config import load_recipe
from metalab.train.trainer import Trainer


def overrides(folders: dict[str, Path], run_dir: Path) -> list[str]:
    return [
        "data.dataset=folder", f"data.train_split={folders['train']}", f"data.val_split={folders['val']}",
        f"data.test_split={folders['test']}", "data.invert_user_images=false", "data.image_size=28", "data.channels=1",
        "task.ways=5", "task.queries=2", "task.meta_batch=2", "learner.hidden=8", "train.steps=2",
        "train.val_every=2", "eval.episodes=5", "eval.val_episodes=5", "eval.queries=3", "train.progress=false",
        "run.tensorboard=false", f"run.dir={run_dir}",
    ]


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
    Trainer(load_recipe("omniglot-protonet-5w1s", overrides(image_folders, tmp_path / "python"))).fit()
    assert mallopt_calls == []
    assert main(["train", "omniglot-protonet-5w1s", *overrides(image_folders, tmp_path / "cli")]) == 0
    assert len(mallopt_calls) == 2  # the mmap and trim thresholds
    allocator.reuse_freed_memory.cache_clear()
    assert main(["eval", str(tmp_path / "cli"), "--episodes", "5"]) == 0
    assert len(mallopt_calls) == 4
    allocator.reuse_freed_memory.cache_clear()
    off = [*overrides(image_folders, tmp_path / "off"), "speed.reuse_freed_memory=false"]
    assert main(["train", "omniglot-protonet-5w1s", *off]) == 0
    assert len(mallopt_calls) == 4
