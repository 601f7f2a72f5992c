"""The Meta-LSTM recipes build and meta-train a step: mini-ImageNet on generated images in the official layout
(``<root>/miniimagenet/images/<filename>.jpg`` named as in the packaged Ravi split lists)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from metalab.config import load_recipe
from metalab.data import miniimagenet
from metalab.train.trainer import Trainer

CLASSES, PER_CLASS = 5, 6


@pytest.fixture
def mini_imagenet_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The first 5 classes x 6 images of each packaged split, as small generated JPEGs under their real names."""
    read = miniimagenet.read_split_csv
    kept: dict[str, list[tuple[str, str]]] = {}
    for split in ("train", "val", "test"):
        by_class: dict[str, list[tuple[str, str]]] = {}
        for filename, label in read(None, split):
            if len(by_class) < CLASSES or label in by_class:
                by_class.setdefault(label, [])
                if len(by_class[label]) < PER_CLASS:
                    by_class[label].append((filename, label))
        kept[split] = [row for rows in by_class.values() for row in rows]
        for index, (filename, _) in enumerate(kept[split]):
            path = tmp_path / "miniimagenet" / "images" / filename
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (90, 84), (40 * (index % 6), 20 * (index // 6), 90)).save(path)
    monkeypatch.setattr(miniimagenet, "read_split_csv", lambda split_file, split: kept[split])
    return tmp_path


@pytest.mark.parametrize("recipe", ["miniimagenet-metalstm-5w1s", "miniimagenet-metalstm-5w5s"])
def test_mini_imagenet_recipe_meta_trains_a_step_on_generated_data(recipe, mini_imagenet_root, tmp_path, one_thread):
    overrides = [f"run.dir={tmp_path / 'run'}", "train.steps=1", "train.val_every=0", "eval.episodes=1",
                 "task.queries=1", "eval.queries=1", "learner.inner_steps=2", "learner.inner_steps_test=2",
                 "learner.hidden=4", "run.tensorboard=false", "train.progress=false"]
    config = load_recipe(recipe, overrides)
    assert config.learner.name == "metalstm" and config.data.image_size is None  # 84 px, the data set's
    Trainer(config, data_root=str(mini_imagenet_root)).fit()
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert 0.0 <= results["test"]["accuracy"] <= 1.0 and results["test"]["episodes"] == 1
    assert (tmp_path / "run" / "last.pt").is_file()


@pytest.mark.parametrize("recipe", ["omniglot-metalstm-5w1s", "omniglot-metalstm-5w5s"])
def test_omniglot_recipes_are_the_papers_settings(recipe):
    config = load_recipe(recipe)
    assert (config.learner.lstm_hidden, config.learner.preprocess_p, config.learner.first_order) == (20, 10.0, True)
    assert (config.optim.lr, config.optim.grad_clip, config.task.meta_batch) == (0.001, 0.25, 1)
    assert config.learner.inner_steps == (15 if config.task.shots == 1 else 8)
