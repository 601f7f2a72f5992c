"""Heterogeneous task sets: tasks drawn from several families, the family of each kept as its group.

A mixture picks task ``index``'s family from its own seeded generator (with the recipe's mixing weights), then
draws the task from that family. The family is a side table, ``group(index)`` / ``groups(start, size)``: the
:class:`~metalab.data.task.Task` a learner receives carries it (``Task.group``) only when the source is built with
``reveal_groups=True`` (``data.reveal_groups`` in a recipe), never by default.

Regression: the multi-family toy benchmark of HSML (Yao et al. 2019, section 5.1, and the authors' code,
``data_generator.generate_mixture_batch``), four families on x in [-5, 5]:

    sinusoid   y = A sin(w x) + b          A in [0.1, 5], w in [0.8, 1.2], b in [0, 2 pi]
    line       y = A x + b                 A, b in [-3, 3]
    quadratic  y = A x^2 + b x + c         A in [-0.2, 0.2], b in [-2, 2], c in [-3, 3]
    cubic      y = A x^3 + b x^2 + c x + d A in [-0.1, 0.1], b in [-0.2, 0.2], c in [-2, 2], d in [-3, 3]

(the code adds b to the sine, unlike MAML's phase; no noise, as in the code).
"""
from __future__ import annotations

import math
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from metalab.data.task import Task


@dataclass(frozen=True)
class Polynomial:
    """y = sum_i c_i x^i with each coefficient c_i uniform in ``ranges[i]`` (i = 0: the constant)."""

    ranges: tuple[tuple[float, float], ...]
    x_range: tuple[float, float] = (-5.0, 5.0)

    def sample(self, rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
        """One task: x [count, 1] uniform on ``x_range`` and its y [count, 1]."""
        coefficients = [rng.uniform(*r) for r in self.ranges]
        x = rng.uniform(*self.x_range, size=(count, 1))
        return x, np.polynomial.polynomial.polyval(x, coefficients)


@dataclass(frozen=True)
class ShiftedSinusoid:
    """y = A sin(w x) + b (HSML's sinusoid family)."""

    amplitude_range: tuple[float, float] = (0.1, 5.0)
    frequency_range: tuple[float, float] = (0.8, 1.2)
    shift_range: tuple[float, float] = (0.0, 2 * math.pi)
    x_range: tuple[float, float] = (-5.0, 5.0)

    def sample(self, rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
        amplitude, frequency = rng.uniform(*self.amplitude_range), rng.uniform(*self.frequency_range)
        shift = rng.uniform(*self.shift_range)
        x = rng.uniform(*self.x_range, size=(count, 1))
        return x, amplitude * np.sin(frequency * x) + shift


#: HSML's four regression families (Yao et al. 2019), in the paper's order.
HSML_FAMILIES: dict[str, Polynomial | ShiftedSinusoid] = {
    "sinusoid": ShiftedSinusoid(),
    "line": Polynomial(((-3.0, 3.0), (-3.0, 3.0))),
    "quadratic": Polynomial(((-3.0, 3.0), (-2.0, 2.0), (-0.2, 0.2))),
    "cubic": Polynomial(((-3.0, 3.0), (-2.0, 2.0), (-0.2, 0.2), (-0.1, 0.1))),
}


def mixing_weights(families: Mapping[str, float], known: Sequence[str], option: str = "data.families") -> \
        tuple[list[str], np.ndarray]:
    """The chosen families (all ``known`` ones, equally, when ``families`` is empty) and their normalised weights."""
    if not families:
        return list(known), np.full(len(known), 1.0 / len(known))
    unknown = [name for name in families if name not in known]
    if unknown:
        raise ValueError(f"{option} names unknown families {unknown}; known: {', '.join(known)}")
    weights = np.array([float(w) for w in families.values()])
    if not (np.all(np.isfinite(weights)) and np.all(weights >= 0) and weights.sum() > 0):
        raise ValueError(f"{option} must map family names to mixing weights >= 0 with a positive sum, "
                         f"got {dict(families)}")
    return list(families), weights / weights.sum()


class MixtureTasks:
    """Base of a seeded task set over several families: task ``index`` comes from family ``group(index)``.

    Subclasses draw a task of family ``k`` with :meth:`family_task` from the generator that chose ``k``.
    """

    def __init__(self, names: Sequence[str], weights: np.ndarray, split: str, shots: int, queries: int,
                 seed: int = 0, reveal_groups: bool = False) -> None:
        self.names, self.weights = list(names), np.asarray(weights, dtype=float)
        self.split, self.shots, self.queries, self.seed = split, shots, queries, seed
        self.reveal_groups = reveal_groups
        self._salt = zlib.crc32(split.encode())

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self._salt, index])

    def group(self, index: int) -> int:
        """The family (an index into ``names``) of task ``index``: the first draw of the task's generator."""
        return int(self._rng(index).choice(len(self.names), p=self.weights))

    def groups(self, start: int, size: int) -> Tensor:
        """Families of tasks start..start+size-1 [size] (int64)."""
        return torch.tensor([self.group(i) for i in range(start, start + size)], dtype=torch.long)

    def family_task(self, family: int, rng: np.random.Generator, index: int) -> Task:
        raise NotImplementedError

    def task(self, index: int) -> Task:
        rng = self._rng(index)
        family = int(rng.choice(len(self.names), p=self.weights))
        task = self.family_task(family, rng, index)
        if self.reveal_groups:
            task.group = torch.tensor(family)
        return task

    def batch(self, start: int, size: int) -> Task:
        return Task.stack([self.task(i) for i in range(start, start + size)])

    def fixed(self, count: int) -> FixedMixtureTasks:
        return FixedMixtureTasks(self, count)


@dataclass
class FixedMixtureTasks:
    """The first ``count`` tasks of a mixture: a fixed evaluation set whose ``groups()`` split scores by family."""

    source: MixtureTasks
    count: int
    names: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.names = self.source.names

    @property
    def shots(self) -> int:
        return self.source.shots

    @property
    def queries(self) -> int:
        return self.source.queries

    @property
    def seed(self) -> int:
        return self.source.seed

    @property
    def ways(self) -> int | None:
        return getattr(self.source, "ways", None)

    def __len__(self) -> int:
        return self.count

    def groups(self) -> Tensor:
        """The family of every task [count], in order."""
        return self.source.groups(0, self.count)

    def batches(self, size: int) -> Iterator[Task]:
        for start in range(0, self.count, size):
            yield self.source.batch(start, min(size, self.count - start))


class MixedRegressionTasks(MixtureTasks):
    """Regression tasks from several function families (default: HSML's four, equally likely)."""

    def __init__(self, split: str, shots: int, queries: int, seed: int = 0,
                 families: Mapping[str, float] | None = None, reveal_groups: bool = False) -> None:
        if shots < 1 or queries < 1:
            raise ValueError(f"regression tasks need shots >= 1 and queries >= 1, got {shots} and {queries}")
        names, weights = mixing_weights(families or {}, list(HSML_FAMILIES))
        super().__init__(names, weights, split, shots, queries, seed, reveal_groups)
        self.x_range = (-5.0, 5.0)

    def family_task(self, family: int, rng: np.random.Generator, index: int) -> Task:
        x, y = HSML_FAMILIES[self.names[family]].sample(rng, self.shots + self.queries)
        x_t, y_t = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32)
        return Task(x_t[: self.shots], y_t[: self.shots], x_t[self.shots :], y_t[self.shots :])
