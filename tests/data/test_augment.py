"""Augmentation of training tasks named in the recipe (data.augment): operations parsed or refused by name, each
image augmented (closed form: a certain flip), reproducible from the seed and task index alone, and never applied to
validation or test episodes."""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from metalab.config import ConfigError, compose
from metalab.data.augment import AugmentedTasks, augmented, build_augmentation, parse_operation
from metalab.data.classes import ClassDataset
from metalab.data.episodes import EpisodeSampler
from metalab.data.sources import evaluation_episodes


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():  # the compatibility warning of a torchvision built for another torch
        warnings.simplefilter("ignore")
        yield


def test_operations_parse_by_position_and_name_and_bad_ones_name_the_fix() -> None:
    assert parse_operation("color_jitter(0.4, 0.4, saturation=0.2)") == (
        "color_jitter", {"brightness": 0.4, "contrast": 0.4, "saturation": 0.2, "hue": 0.0})
    assert parse_operation("random_crop(padding=8)") == ("random_crop", {"size": None, "padding": 8})
    assert parse_operation(" hflip ") == ("hflip", {"p": 0.5})
    for spec, message in [("rotate(10)", "unknown operation 'rotate'; known: random_resized_crop"),
                          ("hflip(0.5, 2)", "hflip takes at most 1 arguments"),
                          ("random_crop(pad=8)", "random_crop has no parameter 'pad'; it takes size, padding"),
                          ("hflip(p=often)", "p must be a number")]:
        with pytest.raises(ValueError, match=message.replace("(", r"\(")):
            parse_operation(spec)
    with pytest.raises(ConfigError, match="unknown operation 'flip'"):  # when the recipe is composed
        compose({"learner": {"name": "protonet"}, "data": {"augment": ["flip"]}})
    with pytest.raises(ValueError, match="crops to 84x84 but the images are 28x28"):
        build_augmentation(["random_crop(84, padding=8)"], (1, 28, 28))


def test_a_certain_flip_flips_every_training_image(class_dataset: ClassDataset) -> None:
    source = EpisodeSampler(class_dataset, ways=3, shots=2, queries=1, seed=0)
    tasks = augmented(source, ["hflip(1)"], class_dataset.image_shape, seed=0)
    plain, flipped = source.batch(4, 2), tasks.batch(4, 2)
    torch.testing.assert_close(flipped.support_x, plain.support_x.flip(-1), rtol=0, atol=0)
    torch.testing.assert_close(flipped.query_x, plain.query_x.flip(-1), rtol=0, atol=0)
    assert torch.equal(flipped.support_y, plain.support_y) and augmented(source, [], (1, 28, 28), 0) is source


def test_augmentation_is_a_function_of_the_seed_and_task_index(class_dataset: ClassDataset) -> None:
    source = EpisodeSampler(class_dataset, ways=3, shots=2, queries=1, seed=0)
    specs = ["random_resized_crop(scale_min=0.5)", "color_jitter(0.4, 0.4)", "hflip"]

    def tasks(seed: int) -> AugmentedTasks:
        return AugmentedTasks(source, build_augmentation(specs, class_dataset.image_shape), seed)

    torch.manual_seed(123)
    first = tasks(0).batch(0, 3)
    after = torch.rand(3)  # the global generator continues as if the augmentation had drawn nothing
    torch.manual_seed(123)
    assert torch.equal(after, torch.rand(3))
    again = tasks(0)
    one_by_one = torch.cat([again.batch(i, 1).support_x for i in range(3)])  # as distributed ranks split it
    assert torch.equal(first.support_x, one_by_one)
    assert not torch.equal(first.support_x, source.batch(0, 3).support_x)
    assert not torch.equal(first.support_x, tasks(1).batch(0, 3).support_x)


def test_validation_and_test_episodes_are_never_augmented(image_folders: dict[str, Path], tmp_path: Path) -> None:
    from metalab.train.trainer import Trainer

    recipe = {
        "name": "augmented",
        "data": {"dataset": "folder", "train_split": str(image_folders["train"]),
                 "val_split": str(image_folders["val"]), "test_split": str(image_folders["test"]), "image_size": 28,
                 "channels": 1, "augment": ["hflip(1)"]},
        "task": {"ways": 3, "shots": 1, "queries": 2},
        "eval": {"ways": 3, "shots": 1, "queries": 2, "episodes": 4, "val_episodes": 4},
        "learner": {"name": "protonet", "hidden": 8},
        "train": {"steps": 2, "val_every": 1, "progress": False},
        "run": {"dir": str(tmp_path / "run"), "tensorboard": False},
    }
    trainer = Trainer(compose(recipe))
    trainer._build()
    assert isinstance(trainer.train_tasks, AugmentedTasks)
    torch.testing.assert_close(trainer.train_tasks.batch(0, 1).support_x,
                               trainer.train_tasks.source.batch(0, 1).support_x.flip(-1), rtol=0, atol=0)
    plain = compose({**recipe, "data": {**recipe["data"], "augment": []}})
    for split, seed in [("val", 1), ("test", 0)]:
        episodes = (trainer.val_episodes if split == "val"
                    else evaluation_episodes(trainer.config, trainer.config.data.test_split))
        unaugmented = evaluation_episodes(plain, plain.data[f"{split}_split"], seed=seed, episodes=4)
        for got, expected in zip(episodes.batches(2), unaugmented.batches(2)):
            assert torch.equal(got.support_x, expected.support_x) and torch.equal(got.query_x, expected.query_x)
