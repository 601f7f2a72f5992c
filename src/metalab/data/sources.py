"""Task sources for the trainer and evaluator, built from a config.

A task source has ``batch(start, size) -> Task`` (tasks start..start+size-1 of a seeded stream) and
``fixed(count) -> episodes`` with ``len()`` and ``batches(size)``. Classification sources are
:class:`EpisodeSampler` over a :class:`ClassDataset`; regression families (sinusoid, ...) live in
``metalab.data.regression``.
"""
from __future__ import annotations

from typing import Any, Protocol

from omegaconf import DictConfig

from metalab.data.classes import ClassDataset
from metalab.data.episodes import EpisodeSampler
from metalab.data.task import Task

REGRESSION_FAMILIES = ("sinusoid", "gp")


class TaskSource(Protocol):
    def batch(self, start: int, size: int) -> Task: ...

    def fixed(self, count: int) -> Any: ...


def is_regression(config: DictConfig) -> bool:
    return config.data.dataset in REGRESSION_FAMILIES


def load_split(config: DictConfig, split: str, data_root: str | None = None) -> ClassDataset:
    """The class dataset of ``split`` for this config's data set (regression has none)."""
    from metalab.data.datasets import load_dataset

    return load_dataset(
        config.data.dataset,
        split,
        root=data_root or config.data.root,
        image_size=config.data.image_size,
        channels=config.data.channels,
        invert=config.data.invert_user_images and config.data.dataset == "folder",
    )


def task_source(
    config: DictConfig,
    split: str,
    ways: int,
    shots: int,
    queries: int,
    seed: int,
    within_group: bool = False,
    data_root: str | None = None,
    dataset: ClassDataset | None = None,
) -> TaskSource:
    """Episodes of ``split``: an EpisodeSampler for class data, a task family for regression."""
    if is_regression(config):
        from metalab.data.regression import regression_source

        return regression_source(config.data.dataset, split, shots=shots, queries=queries, seed=seed)
    if dataset is None:
        dataset = load_split(config, split, data_root)
    return EpisodeSampler(dataset, ways, shots, queries, seed=seed, within_group=within_group)


def input_shape(config: DictConfig, data_root: str | None = None, dataset: ClassDataset | None = None) -> tuple[int, ...]:
    """Shape of one input without the batch dimension, as the learner is built for it."""
    if is_regression(config):
        from metalab.data.regression import regression_input_shape

        return regression_input_shape(config.data.dataset)
    if dataset is None:
        dataset = load_split(config, config.data.train_split, data_root)
    return dataset.image_shape
