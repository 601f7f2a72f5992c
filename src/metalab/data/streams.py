"""Task streams: seeded, ordered sequences of tasks whose distribution shifts from stage to stage.

* :class:`TaskStream`: stage ``s`` serves ``tasks_per_stage`` tasks of its own source (e.g. one function family
  of :mod:`metalab.data.mixtures` per stage: a new family appears at each stage boundary);
* :class:`RainbowDigits`: the Rainbow MNIST stream of Finn et al. 2019 (Online Meta-Learning, section 6), on
  scikit-learn's 8x8 digits: every task is 10-way digit classification under one transformation, a colour (7),
  a scale (full or half size) and a rotation (0, 90, 180, 270 degrees): 56 tasks. The rotation is the stage (it
  changes between stages); within a stage the 14 (colour, scale) pairs come in a seeded order.

Task ``t``'s stage is ``stage(t)``, a side table like a mixture's group: the Task itself does not carry it.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import product
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from metalab.data.episodes import EpisodeSampler
from metalab.data.image_families import load_digits_dataset
from metalab.data.task import Task


class IndexedTasks(Protocol):
    def task(self, index: int) -> Task: ...


class TaskStream:
    """``tasks_per_stage`` tasks of ``stages[0]``, then of ``stages[1]``, ...; task ``t`` is ``stages[s].task(t)``."""

    def __init__(self, stages: Sequence[IndexedTasks], tasks_per_stage: int,
                 names: Sequence[str] | None = None) -> None:
        if tasks_per_stage < 1 or not stages:
            raise ValueError(f"a task stream needs at least one stage and tasks_per_stage >= 1, got {len(stages)} "
                             f"stages and tasks_per_stage={tasks_per_stage}")
        self.stages, self.tasks_per_stage = list(stages), tasks_per_stage
        self.names = list(names) if names is not None else [f"stage{s}" for s in range(len(stages))]

    def __len__(self) -> int:
        return len(self.stages) * self.tasks_per_stage

    def stage(self, t: int) -> int:
        if not 0 <= t < len(self):
            raise IndexError(f"task {t} is outside the stream of {len(self)} tasks")
        return t // self.tasks_per_stage

    def task(self, t: int) -> Task:
        return self.stages[self.stage(t)].task(t)

    def __iter__(self) -> Iterator[Task]:
        return (self.task(t) for t in range(len(self)))


#: the seven colours of Rainbow MNIST (RGB multipliers of the grey-scale digit)
COLOURS = ((1.0, 0.0, 0.0), (1.0, 0.5, 0.0), (1.0, 1.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (0.3, 0.0, 0.5),
           (0.6, 0.0, 1.0))
SCALES = (1.0, 0.5)
ROTATIONS = (0, 90, 180, 270)


def rainbow(images: Tensor, colour: Sequence[float], scale: float, rotation: int) -> Tensor:
    """Grey images [N, 1, S, S] -> coloured [N, 3, S, S]: scaled about the centre, rotated, tinted."""
    size = images.shape[-1]
    if scale != 1.0:
        small = max(1, round(size * scale))
        shrunk = F.interpolate(images, size=(small, small), mode="bilinear", align_corners=False)
        pad = size - small
        images = F.pad(shrunk, (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2))
    images = torch.rot90(images, rotation // 90, dims=(2, 3))
    return images * torch.tensor(colour, dtype=images.dtype).view(1, 3, 1, 1)


class RainbowDigits:
    """The 56-task Rainbow stream on scikit-learn's digits (see the module docstring).

    Task ``t``: 10-way, ``shots`` training images per class from the digits' train part (the data that arrives
    in the online setting) and ``queries`` per class from its test part, all under task ``t``'s transformation;
    the label is the digit itself in every task.
    """

    def __init__(self, shots: int = 20, queries: int = 10, seed: int = 0, image_size: int = 28) -> None:
        pairs = list(product(range(len(COLOURS)), SCALES))
        rng = np.random.default_rng([seed, 56])
        self.transforms = [(COLOURS[c], scale, rotation) for rotation in ROTATIONS
                           for c, scale in (pairs[i] for i in rng.permutation(len(pairs)))]
        self.tasks_per_stage = len(pairs)
        self.names = [f"rotation{r}" for r in ROTATIONS]
        self.ways, self.shots, self.queries, self.seed = 10, shots, queries, seed
        self._train = EpisodeSampler(load_digits_dataset("train", image_size), 10, shots, 0, seed=seed)
        self._test = EpisodeSampler(load_digits_dataset("test", image_size), 10, queries, 0, seed=seed)

    def __len__(self) -> int:
        return len(self.transforms)

    def stage(self, t: int) -> int:
        return t // self.tasks_per_stage

    def task(self, t: int) -> Task:
        """Task ``t``: support [10 * shots, 3, S, S] (class by class), query [10 * queries, 3, S, S]."""
        colour, scale, rotation = self.transforms[t]
        train, test = self._train.task(t), self._test.task(t)
        assert train.classes is not None and test.classes is not None  # the sampler's episodes name their classes
        # label = the digit, in every task (as in Rainbow MNIST), not the episode's order of classes
        return Task(rainbow(train.support_x, colour, scale, rotation), train.classes[train.support_y],
                    rainbow(test.support_x, colour, scale, rotation), test.classes[test.support_y])

    def __iter__(self) -> Iterator[Task]:
        return (self.task(t) for t in range(len(self)))
