"""Regression tasks that are sinusoids or lines, and ambiguous ones that a sinusoid and a line both explain
(Finn, Xu & Levine 2018, "Probabilistic Model-Agnostic Meta-Learning", section 6).

``sinusoid-line`` (:class:`SinusoidOrLine`): each task is, with probability 1/2, a sinusoid of the MAML family
(amplitude in [0.1, 5], phase in [0, pi]) or a line (slope and intercept in [-3, 3]), on x in [-5, 5].

``ambiguous`` (:class:`AmbiguousSinusoidLine`): each task draws a sinusoid and a line of those ranges that agree,
within ``tolerance``, over at least ``min_agreement`` of x; its first ``support`` points (the support set of a
5-shot task) lie where they agree, so that both explain them, and the task's truth, the sinusoid or the line with
probability 1/2 each, gives every value. A learner that captures the ambiguity predicts both from those points.

Like every regression family (:mod:`metalab.data.regression`), a task is a pure function of ``(seed, split,
index)`` through the generator it is given; :meth:`sample_function` draws the task's functions first, so that
``RegressionTasks.function(index)`` gives the functions of task ``index``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import overload

import numpy as np
import torch
from torch import Tensor

SINUSOID, LINE = 0.0, 1.0  # the "truth" field of a task's functions


@overload
def evaluate(function: dict[str, float], x: np.ndarray) -> np.ndarray: ...


@overload
def evaluate(function: dict[str, float], x: Tensor) -> Tensor: ...


def evaluate(function: dict[str, float], x: np.ndarray | Tensor) -> np.ndarray | Tensor:
    """The task's true function (its sinusoid or its line, as ``function["truth"]`` says) at x."""
    if function["truth"] == SINUSOID:
        return sinusoid(function, x)
    return function["slope"] * x + function["intercept"]


def sinusoid(function: dict[str, float], x: np.ndarray | Tensor) -> np.ndarray | Tensor:
    """amplitude * sin(x - phase)."""
    if isinstance(x, Tensor):
        return function["amplitude"] * torch.sin(x - function["phase"])
    return function["amplitude"] * np.sin(x - function["phase"])


@dataclass(frozen=True)
class SinusoidOrLine:
    """A sinusoid or a line with probability 1/2 each; y = f(x) + noise * N(0, 1)."""

    amplitude_range: tuple[float, float] = (0.1, 5.0)
    phase_range: tuple[float, float] = (0.0, math.pi)
    slope_range: tuple[float, float] = (-3.0, 3.0)
    intercept_range: tuple[float, float] = (-3.0, 3.0)
    x_range: tuple[float, float] = (-5.0, 5.0)
    #: standard deviation of the observation noise (0: the exact function values)
    noise: float = 0.0

    def draw_both(self, rng: np.random.Generator) -> dict[str, float]:
        """A sinusoid's and a line's parameters, both drawn (the generator advances the same way either way)."""
        return {"amplitude": float(rng.uniform(*self.amplitude_range)), "phase": float(rng.uniform(*self.phase_range)),
                "slope": float(rng.uniform(*self.slope_range)),
                "intercept": float(rng.uniform(*self.intercept_range))}

    def sample_function(self, rng: np.random.Generator) -> dict[str, float]:
        both = self.draw_both(rng)
        return {**both, "truth": SINUSOID if rng.random() < 0.5 else LINE}

    def sample(self, rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
        """One task: x, y [count, 1]."""
        function = self.sample_function(rng)
        x = rng.uniform(*self.x_range, size=(count, 1))
        return x, observe(function, x, self.noise, rng)

    evaluate = staticmethod(evaluate)


@dataclass(frozen=True)
class AmbiguousSinusoidLine(SinusoidOrLine):
    """A sinusoid and a line that agree on part of x; the first ``support`` points lie there (module docstring)."""

    #: points of each task drawn where the sinusoid and the line agree (the support set of a 5-shot task).
    support: int = 5
    #: the largest |sinusoid(x) - line(x)| where they are said to agree.
    tolerance: float = 0.2
    #: the least length of x over which they must agree (a pair that agrees on less is drawn again).
    min_agreement: float = 1.0
    #: the least largest |sinusoid(x) - line(x)| over x_range: elsewhere the two explanations must differ by this
    #: much (a pair that never does, e.g. a flat line and a low sinusoid, is drawn again).
    min_difference: float = 1.0
    #: the inputs where agreement is checked: this many evenly spaced points of x_range.
    grid: int = 2001

    def difference(self, function: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
        """The grid of x_range [grid] and |sinusoid(x) - line(x)| on it [grid]."""
        x = np.linspace(*self.x_range, self.grid)
        return x, np.abs(sinusoid(function, x) - (function["slope"] * x + function["intercept"]))

    def agreement(self, function: dict[str, float]) -> np.ndarray:
        """The grid inputs where the sinusoid and the line agree within ``tolerance``."""
        x, difference = self.difference(function)
        return x[difference <= self.tolerance]

    def sample_function(self, rng: np.random.Generator) -> dict[str, float]:
        spacing = (self.x_range[1] - self.x_range[0]) / (self.grid - 1)
        while True:  # rejection: about one pair in ten is kept with the defaults
            both = self.draw_both(rng)
            _, difference = self.difference(both)
            if ((difference <= self.tolerance).sum() * spacing >= self.min_agreement
                    and difference.max() >= self.min_difference):
                return {**both, "truth": SINUSOID if rng.random() < 0.5 else LINE}

    def sample(self, rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
        """One task: x, y [count, 1]; x[:support] where both functions agree, the others uniform on x_range."""
        function = self.sample_function(rng)
        ambiguous = min(self.support, count)
        x = np.concatenate([rng.choice(self.agreement(function), size=ambiguous, replace=False),
                            rng.uniform(*self.x_range, size=count - ambiguous)])[:, None]
        return x, observe(function, x, self.noise, rng)


def observe(function: dict[str, float], x: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """The truth at x [N, 1] plus Gaussian noise of standard deviation ``noise``."""
    y = evaluate(function, x)
    return y + noise * rng.standard_normal(y.shape) if noise > 0 else y
