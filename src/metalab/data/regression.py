"""Regression task families: few-point function fitting (sinusoid of the MAML paper, GP samples).

Like the episode sampler, every task is a pure function of ``(seed, split, index)``.
A regression Task holds support_x [K, 1], support_y [K, 1], query_x [Q, 1], query_y [Q, 1]
(with a leading task dimension T when batched).
"""
from __future__ import annotations

import math
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol, cast, overload

import numpy as np
import torch
from torch import Tensor

from metalab.data.task import Task


class RegressionFamily(Protocol):
    @property
    def x_range(self) -> tuple[float, float]:
        """The interval the inputs are drawn from (and the plots span)."""
        ...

    def sample(self, rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
        """One task: a function drawn from the family and ``count`` points of it, x and y [count, 1]."""
        ...


class FunctionFamily(RegressionFamily, Protocol):
    """A family whose tasks are explicit functions (the sinusoid): their parameters, and their values anywhere."""

    def sample_function(self, rng: np.random.Generator) -> dict[str, float]: ...

    @overload
    def evaluate(self, function: dict[str, float], x: np.ndarray) -> np.ndarray: ...

    @overload
    def evaluate(self, function: dict[str, float], x: Tensor) -> Tensor: ...


@dataclass(frozen=True)
class Sinusoid:
    """y = amplitude * sin(x - phase), amplitude in [0.1, 5], phase in [0, pi], x in [-5, 5] (Finn et al. 2017)."""

    amplitude_range: tuple[float, float] = (0.1, 5.0)
    phase_range: tuple[float, float] = (0.0, math.pi)
    x_range: tuple[float, float] = (-5.0, 5.0)

    def sample_function(self, rng: np.random.Generator) -> dict[str, float]:
        return {"amplitude": float(rng.uniform(*self.amplitude_range)), "phase": float(rng.uniform(*self.phase_range))}

    def sample_inputs(self, rng: np.random.Generator, count: int) -> np.ndarray:
        return rng.uniform(*self.x_range, size=(count, 1))

    def sample(self, rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
        """One task's function and ``count`` points of it: x [count, 1], y [count, 1]."""
        function = self.sample_function(rng)
        x = self.sample_inputs(rng, count)
        return x, self.evaluate(function, x)

    @overload
    @staticmethod
    def evaluate(function: dict[str, float], x: np.ndarray) -> np.ndarray: ...

    @overload
    @staticmethod
    def evaluate(function: dict[str, float], x: Tensor) -> Tensor: ...

    @staticmethod
    def evaluate(function: dict[str, float], x: np.ndarray | Tensor) -> np.ndarray | Tensor:
        if isinstance(x, Tensor):
            return function["amplitude"] * torch.sin(x - function["phase"])
        return function["amplitude"] * np.sin(x - function["phase"])


class RegressionTasks:
    """A seeded stream of regression tasks from one family: K support and Q query points each.

    ``split`` salts the seed, so the train, val and test streams differ even with equal seeds.
    """

    def __init__(self, family: RegressionFamily, split: str, shots: int, queries: int, seed: int = 0) -> None:
        if shots < 1 or queries < 1:
            raise ValueError(f"regression tasks need shots >= 1 and queries >= 1, got {shots} and {queries}")
        self.family, self.split = family, split
        self.shots, self.queries, self.seed = shots, queries, seed
        self._salt = zlib.crc32(split.encode())

    def function(self, index: int) -> dict[str, float]:
        """The parameters of task ``index``'s function (families with ``sample_function``, e.g. sinusoid)."""
        family = cast(FunctionFamily, self.family)  # a duck-typed family: others have no sample_function
        return family.sample_function(np.random.default_rng([self.seed, self._salt, index]))

    def task(self, index: int) -> Task:
        x, y = self.family.sample(np.random.default_rng([self.seed, self._salt, index]), self.shots + self.queries)
        x_t, y_t = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32)
        return Task(x_t[: self.shots], y_t[: self.shots], x_t[self.shots :], y_t[self.shots :])

    def batch(self, start: int, size: int) -> Task:
        return Task.stack([self.task(i) for i in range(start, start + size)])

    def fixed(self, count: int) -> FixedRegressionTasks:
        return FixedRegressionTasks(self, count)


class FixedRegressionTasks:
    """The first ``count`` tasks of a stream: the fixed evaluation set for regression."""

    ways = None

    def __init__(self, stream: RegressionTasks, count: int) -> None:
        self.stream, self.count = stream, count
        self.shots, self.queries, self.seed = stream.shots, stream.queries, stream.seed

    def __len__(self) -> int:
        return self.count

    def batches(self, size: int) -> Iterator[Task]:
        for start in range(0, self.count, size):
            yield self.stream.batch(start, min(size, self.count - start))


FAMILIES = {"sinusoid": Sinusoid}


def regression_family(name: str):
    if name == "gp":
        from metalab.data.gp import GaussianProcessFamily

        return GaussianProcessFamily()
    if name in ("sinusoid-line", "ambiguous"):
        from metalab.data.ambiguous import AmbiguousSinusoidLine, SinusoidOrLine

        return SinusoidOrLine() if name == "sinusoid-line" else AmbiguousSinusoidLine()
    try:
        return FAMILIES[name]()
    except KeyError:
        known = ", ".join([*FAMILIES, "gp", "sinusoid-line", "ambiguous"])
        raise ValueError(f"unknown regression family {name!r}; known: {known}") from None


def regression_source(name: str, split: str, shots: int, queries: int, seed: int,
                      families: dict[str, float] | None = None, reveal_groups: bool = False) -> Any:
    """The seeded task set of a regression family, or of several (``hetero-regression``, with ``families``'
    mixing weights: :class:`metalab.data.mixtures.MixedRegressionTasks`)."""
    if name == "hetero-regression":
        from metalab.data.mixtures import MixedRegressionTasks

        return MixedRegressionTasks(split, shots, queries, seed, families, reveal_groups)
    return RegressionTasks(regression_family(name), split, shots, queries, seed)


def regression_input_shape(name: str) -> tuple[int, ...]:
    return (1,)
