"""The natural-image recipes (CIFAR-FS, FC100, CUB, ...) train and test end to end on generated releases in the
official layouts: two meta-training steps each, the backbone the recipe names, the episodes of its test split."""
from __future__ import annotations

from pathlib import Path

import pytest

from metalab.config import load_recipe
from metalab.train.trainer import Trainer
from testdata import write_cifar100_release

SMALL = ["train.steps=2", "train.val_every=2", "train.ckpt_every=2", "train.log_every=1", "train.progress=false",
         "eval.episodes=2", "eval.val_episodes=2", "eval.queries=1", "run.tensorboard=false"]


@pytest.mark.parametrize("recipe, backbone", [("cifar-fs-r2d2-5w1s", "conv4"), ("fc100-metaoptnet-5w1s", "resnet12")])
def test_a_cifar_recipe_trains_and_tests_on_the_release_layout(recipe: str, backbone: str, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METALAB_CACHE", str(tmp_path / "cache"))
    write_cifar100_release(tmp_path / "data" / "cifar100" / "cifar-100-python.tar.gz")
    # 3 images per class: one-shot training episodes with one query; one episode per step
    config = load_recipe(recipe, [*SMALL, f"data.root={tmp_path / 'data'}", f"run.dir={tmp_path / 'run'}",
                                  "task.shots=1", "task.queries=1", "task.meta_batch=1"])
    assert config.learner.backbone.startswith(backbone)
    result = Trainer(config).fit()
    assert (tmp_path / "run" / "last.pt").is_file()
    assert result["test"]["episodes"] == 2 and 0.0 <= result["test"]["mean"] <= 1.0
