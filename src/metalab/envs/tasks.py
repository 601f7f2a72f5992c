"""Seeded streams of environment tasks: what the trainer and evaluator read for meta-RL.

A family (:class:`EnvFamily`) names its Gymnasium environment, how a task is drawn and its episode length. A
stream (:class:`EnvTasks`) makes every task a pure function of ``(seed, split, index)``, as the episode sampler
does for classification, so a resumed run sees the tasks it would have seen. A batch of tasks
(:class:`EnvTaskBatch`) sets them on a :class:`gymnasium.vector.SyncVectorEnv` whose copies it resets with
seeds of its own: the environment's randomness is fixed by the batch, the policy's by torch's generator.
"""
from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch

#: a task's parameters: what set_task receives (a goal, a direction, a bandit's arm probabilities, ...)
TaskParams = dict[str, Any]


class TaskEnv(gym.Env):
    """A Gymnasium environment with a task: ``set_task`` changes it, ``reset`` starts an episode of it."""

    task: TaskParams

    def set_task(self, task: TaskParams) -> None:
        self.task = task


@dataclass
class EnvFamily:
    """A distribution of tasks over one environment.

    Attributes:
        name: the family's name (``data.dataset``).
        make: builds one environment (already limited to ``horizon`` steps per episode).
        sample_task: draws a task from a generator (``split`` lets families with fixed task sets, Meta-World's
            train and test tasks, pick theirs).
        horizon: steps per episode.
    """

    name: str
    make: Callable[[], gym.Env]
    sample_task: Callable[[np.random.Generator, str], TaskParams]
    horizon: int
    _vectors: dict[int, gym.vector.SyncVectorEnv] = field(default_factory=dict, repr=False)
    _spaces: tuple[gym.Space, gym.Space] | None = field(default=None, repr=False)

    @property
    def spaces(self) -> tuple[gym.Space, gym.Space]:
        """(observation space, action space) of one environment."""
        if self._spaces is None:
            env = self.make()
            self._spaces = (env.observation_space, env.action_space)
            env.close()
        return self._spaces

    def vector(self, copies: int) -> gym.vector.SyncVectorEnv:
        """``copies`` environments stepped together, built once per count and reused (MuJoCo models are slow
        to build). Episodes reset in the step that ends them (``AutoresetMode.SAME_STEP``)."""
        if copies not in self._vectors:
            self._vectors[copies] = gym.vector.SyncVectorEnv(
                [self.make] * copies, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
        return self._vectors[copies]


@dataclass
class EnvTaskBatch:
    """Tasks ``indices`` of a stream: their parameters and the seed of their environments' randomness."""

    family: EnvFamily
    tasks: list[TaskParams]
    #: one seed per task; copy j of task t resets with seed (seeds[t], j)
    seeds: list[int]
    #: episodes per task that a learner adapts from (MAML-RL's pre-update episodes, the episodes of an RL^2 trial)
    shots: int = 1
    #: episodes per task that score the adapted learner (MAML-RL's post-update episodes, RL^2's trials per task)
    queries: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def __len__(self) -> int:
        return len(self.tasks)

    def to(self, device: torch.device | str) -> EnvTaskBatch:
        """The same tasks, their rollouts' tensors put on ``device``."""
        return EnvTaskBatch(self.family, self.tasks, self.seeds, self.shots, self.queries, torch.device(device))

    def __getitem__(self, index: int | slice) -> EnvTaskBatch:
        chosen = range(len(self))[index]
        picked = [chosen] if isinstance(chosen, int) else list(chosen)
        return EnvTaskBatch(self.family, [self.tasks[i] for i in picked], [self.seeds[i] for i in picked],
                            self.shots, self.queries, self.device)

    def environments(self, copies: int, round_: int = 0) -> tuple[gym.vector.SyncVectorEnv, np.ndarray]:
        """A vector of ``copies`` environments per task, task-major (task t's copies are t*copies ..), each set
        to its task and reset; returns it and the first observations [T * copies, ...].

        ``round_`` numbers the rollouts drawn from the same batch (pre-update, post-update, ...): each round
        resets with other seeds, so rounds are independent samples.
        """
        envs = self.family.vector(len(self) * copies)
        for env, task in zip(envs.envs, [task for task in self.tasks for _ in range(copies)]):
            env.set_task_from(task)  # type: ignore[attr-defined]
        seeds: list[int | None] = [int(np.random.SeedSequence([seed, round_, j]).generate_state(1)[0])
                 for seed in self.seeds for j in range(copies)]
        observations, _ = envs.reset(seed=seeds)
        return envs, observations


class EnvTasks:
    """A seeded stream of tasks of one family; ``split`` salts the seed (train, val and test tasks differ).

    ``pool``: the stream cycles through its first ``pool`` tasks (a fixed set of training tasks, as PEARL's);
    None: every index is a new task.
    """

    def __init__(self, family: EnvFamily, split: str, shots: int, queries: int, seed: int = 0,
                 pool: int | None = None) -> None:
        if pool is not None and pool < 1:
            raise ValueError(f"data.task_pool must be >= 1 (a fixed set of training tasks) or null (a new task at "
                             f"every index), got {pool}")
        self.family, self.split = family, split
        self.shots, self.queries, self.seed, self.pool = shots, queries, seed, pool
        self._salt = zlib.crc32(split.encode())

    def task(self, index: int) -> tuple[TaskParams, int]:
        """Task ``index`` (modulo the pool): its parameters and its environments' seed."""
        index = index % self.pool if self.pool else index
        rng = np.random.default_rng([self.seed, self._salt, index])
        return self.family.sample_task(rng, self.split), int(rng.integers(2**31))

    def batch(self, start: int, size: int) -> EnvTaskBatch:
        drawn = [self.task(i) for i in range(start, start + size)]
        return EnvTaskBatch(self.family, [t for t, _ in drawn], [s for _, s in drawn], self.shots, self.queries)

    def fixed(self, count: int) -> FixedEnvTasks:
        return FixedEnvTasks(self, count)


class FixedEnvTasks:
    """The first ``count`` tasks of a stream: the fixed evaluation tasks of meta-RL.

    ``shots``: episodes per task the learner adapts from; ``queries``: episodes per task that score it.
    """

    ways = None

    def __init__(self, stream: EnvTasks, count: int) -> None:
        self.stream, self.count = stream, count
        self.shots, self.queries, self.seed = stream.shots, stream.queries, stream.seed

    def __len__(self) -> int:
        return self.count

    def batches(self, size: int) -> Iterator[EnvTaskBatch]:
        for start in range(0, self.count, size):
            yield self.stream.batch(start, min(size, self.count - start))


class SetTaskFrom(gym.Wrapper):
    """Adds ``set_task_from(task)`` (what :meth:`EnvTaskBatch.environments` calls) to wrappers (a TimeLimit)
    around the environment ``owner`` whose ``set_task`` takes the task."""

    def __init__(self, env: gym.Env, owner: Any) -> None:
        super().__init__(env)
        self.owner = owner

    def set_task_from(self, task: TaskParams) -> None:
        self.owner.set_task(task)


def limited(env: Any, horizon: int) -> gym.Env:
    """``env`` (with ``set_task``) truncated after ``horizon`` steps, with ``set_task_from``."""
    return SetTaskFrom(gym.wrappers.TimeLimit(env, max_episode_steps=horizon), env)
