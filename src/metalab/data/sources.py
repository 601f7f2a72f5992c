"""Task sources for the trainer and evaluator, built from a config.

A task source has ``batch(start, size) -> Task`` (tasks start..start+size-1 of a seeded stream) and
``fixed(count) -> episodes`` with ``len()`` and ``batches(size)``. Classification sources are
:class:`EpisodeSampler` over a :class:`ClassDataset`; regression families (sinusoid, ...) live in
``metalab.data.regression``; environment families of meta-RL (navigation2d, bandits, ...) in
:mod:`metalab.envs`, whose tasks are environments to act in (shots: episodes to adapt from, queries: episodes
that score).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, cast

from omegaconf import DictConfig

from metalab.data.classes import ClassDataset
from metalab.data.episodes import EpisodeSampler, FixedEpisodes
from metalab.data.task import Task

REGRESSION_FAMILIES = ("sinusoid", "gp", "sinusoid-line", "ambiguous", "hetero-regression")
#: heterogeneous image task sets and the class data set they draw from (:mod:`metalab.data.image_families`)
MIXED_IMAGES = {"hetero-omniglot": "omniglot"}


class TaskSource(Protocol):
    def batch(self, start: int, size: int) -> Task: ...

    def fixed(self, count: int) -> Any: ...


def is_regression(config: DictConfig) -> bool:
    return config.data.dataset in REGRESSION_FAMILIES


def is_environment(config: DictConfig) -> bool:
    """Whether the config's tasks are environments (meta-RL) rather than data."""
    from metalab.envs.families import is_environment as names_environment

    return names_environment(config.data.dataset)


def has_class_data(config: DictConfig) -> bool:
    """Whether the config's tasks are drawn from a class data set (neither regression nor environments)."""
    return not (is_regression(config) or is_environment(config))


def metric_of(config: DictConfig) -> str:
    """What scores the config's learner: "accuracy", "mse" (regression) or "return" (environments)."""
    return "return" if is_environment(config) else "mse" if is_regression(config) else "accuracy"


def load_split(config: DictConfig, split: str, data_root: str | None = None) -> ClassDataset:
    """The class dataset of ``split`` for this config's data set (regression has none)."""
    from metalab.data.datasets import load_dataset

    return load_dataset(
        MIXED_IMAGES.get(config.data.dataset, config.data.dataset),
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
    """Episodes of ``split``: an EpisodeSampler for class data, a task family for regression, a stream of
    environment tasks for meta-RL."""
    if is_environment(config):
        from metalab.envs.families import environment_tasks

        pool = config.data.get("task_pool") if split == config.data.train_split else None  # training tasks only
        tasks = environment_tasks(config.data.dataset, split, shots=shots, queries=queries, seed=seed,
                                  horizon=config.data.horizon, pool=pool)
        return cast(TaskSource, tasks)  # its batches are EnvTaskBatch, what meta-RL learners take for a Task
    if is_regression(config):
        from metalab.data.regression import regression_source

        return regression_source(config.data.dataset, split, shots=shots, queries=queries, seed=seed,
                                 families=dict(config.data.families), reveal_groups=config.data.reveal_groups)
    if dataset is None:
        dataset = load_split(config, split, data_root)
    if config.data.dataset in MIXED_IMAGES:
        from metalab.data.image_families import MixedImageTasks

        return MixedImageTasks(dataset, split, ways, shots, queries, seed=seed, families=dict(config.data.families),
                               reveal_groups=config.data.reveal_groups)
    return EpisodeSampler(dataset, ways, shots, queries, seed=seed, within_group=within_group)


def evaluation_episodes(
    config: DictConfig,
    split: str | None = None,
    *,
    ways: int | None = None,
    shots: int | None = None,
    queries: int | None = None,
    seed: int | None = None,
    episodes: int | None = None,
    within_group: bool | None = None,
    manifest: str | Path | None = None,
    data_root: str | None = None,
) -> Any:
    """The fixed episodes that score a learner: what the trainer's test and ``metalab eval`` evaluate.

    ``split`` defaults to the config's test split; every setting left None is the config's ``eval``
    value (``eval.ways``, ``eval.shots``, ``eval.queries``, ``eval.seed``, ``eval.episodes``,
    ``eval.within_group``). With ``manifest``, exactly the episodes of that manifest (class names
    and item indices, see :class:`FixedEpisodes`), drawn from ``split``; regression tasks have no
    manifest, they are fixed by the seed. Returns :class:`FixedEpisodes` for class data, the
    regression family's fixed tasks otherwise (both have ``len()`` and ``batches(size)``).
    """
    split = split or config.data.test_split
    if manifest:
        if config.data.dataset in MIXED_IMAGES:
            raise ValueError("--manifest applies to classification episodes; regression tasks are fixed by --seed, "
                             "and so are the heterogeneous task sets (hetero-*)")
        if not has_class_data(config):
            kind = "regression" if is_regression(config) else "environment"
            raise ValueError(f"--manifest applies to classification episodes; {kind} tasks are fixed by --seed")
        return FixedEpisodes.load(manifest, load_split(config, split, data_root))

    def given(value: Any, default: Any) -> Any:
        return default if value is None else value

    protocol = config.eval
    source = task_source(
        config, split, given(ways, protocol.ways), given(shots, protocol.shots), given(queries, protocol.queries),
        seed=given(seed, protocol.seed), within_group=given(within_group, protocol.within_group), data_root=data_root,
    )
    return source.fixed(given(episodes, protocol.episodes))


def input_shape(config: DictConfig, data_root: str | None = None,
                dataset: ClassDataset | None = None) -> tuple[int, ...]:
    """Shape of one input without the batch dimension, as the learner is built for it (an environment's
    observation)."""
    if is_environment(config):
        from metalab.envs.families import environment_family

        shape = environment_family(config.data.dataset, config.data.horizon).spaces[0].shape
        return tuple(shape or ())
    if is_regression(config):
        from metalab.data.regression import regression_input_shape

        return regression_input_shape(config.data.dataset)
    if dataset is None:
        dataset = load_split(config, config.data.train_split, data_root)
    return dataset.image_shape
