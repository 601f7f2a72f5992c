"""Per-task replay buffers of transitions (off-policy meta-RL: PEARL keeps one per training task, twice: the RL
buffer that trains the actor-critic and the encoder buffer that the context is drawn from).

A buffer holds named fields of transitions (observations [D], actions [A], rewards [], ...), at most
``capacity`` per task, the oldest overwritten first. Its ``state()`` is plain tensors and ints, what a
checkpoint stores, and ``load(state)`` restores it exactly.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class TaskReplayBuffers:
    """Ring buffers of transitions, one per task key (a task's seed, as a string)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"a replay buffer's capacity must be >= 1 transition per task, got {capacity}")
        self.capacity = capacity
        #: task key -> field name -> [allocated <= capacity, ...]
        self.data: dict[str, dict[str, Tensor]] = {}
        #: task key -> (transitions held, next position to write)
        self.fill: dict[str, tuple[int, int]] = {}

    def __len__(self) -> int:
        """Tasks with at least one transition."""
        return sum(1 for size, _ in self.fill.values() if size > 0)

    def size(self, key: str) -> int:
        return self.fill.get(key, (0, 0))[0]

    def keys(self) -> list[str]:
        """The tasks holding transitions, in the order they were first added."""
        return [key for key, (size, _) in self.fill.items() if size > 0]

    def add(self, key: str, transitions: dict[str, Tensor]) -> None:
        """Append transitions (each field [n, ...], the same n) to task ``key``'s buffer (its storage grows by
        doubling up to the capacity, so that a large capacity costs memory only once it is used)."""
        count = len(next(iter(transitions.values())))
        if key not in self.data:
            self.data[key] = {name: value.new_zeros(0, *value.shape[1:]) for name, value in transitions.items()}
            self.fill[key] = (0, 0)
        size, position = self.fill[key]
        stored = self.data[key]
        for offset in range(0, count, self.capacity):  # more than the capacity at once: the last ones stay
            chunk = min(count - offset, self.capacity)
            allocated = len(next(iter(stored.values())))
            if min(size + chunk, self.capacity) > allocated:
                grown = min(self.capacity, max(size + chunk, 2 * allocated))
                for name, value in stored.items():
                    stored[name] = torch.cat([value, value.new_zeros(grown - allocated, *value.shape[1:])])
            index = (position + torch.arange(chunk)) % self.capacity
            for name, value in transitions.items():
                stored[name][index] = value[offset:offset + chunk].to(stored[name].dtype)
            size, position = min(size + chunk, self.capacity), (position + chunk) % self.capacity
        self.fill[key] = (size, position)

    def clear(self, key: str) -> None:
        """Forget task ``key``'s transitions (PEARL refreshes the encoder buffer of a task before collecting)."""
        if key in self.fill:
            self.fill[key] = (0, 0)

    def sample(self, keys: list[str], count: int, generator: torch.Generator) -> dict[str, Tensor]:
        """``count`` transitions of each task in ``keys``, uniformly with replacement: fields [len(keys), count,
        ...]."""
        empty = [key for key in keys if self.size(key) == 0]
        if empty:
            raise ValueError(f"cannot sample transitions of tasks {empty}: their replay buffers are empty")
        picked = [torch.randint(self.size(key), (count,), generator=generator) for key in keys]
        names = self.data[keys[0]].keys()
        return {name: torch.stack([self.data[key][name][index.to(self.data[key][name].device)]
                                   for key, index in zip(keys, picked)]) for name in names}

    def state(self) -> dict[str, Any]:
        """The held transitions (only the filled part of each buffer) and positions: a checkpoint's entry."""
        return {"capacity": self.capacity,
                "tasks": {key: {"size": size, "position": position,
                                "data": {name: value[:size].clone() for name, value in self.data[key].items()}}
                          for key, (size, position) in self.fill.items()}}

    def load(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state` returned (the capacity must match)."""
        if state["capacity"] != self.capacity:
            raise ValueError(f"the checkpoint's replay buffers hold {state['capacity']} transitions per task, this "
                             f"learner's {self.capacity}: resume with the replay capacity the run was trained with")
        self.data = {key: {name: value.clone() for name, value in task["data"].items()}
                     for key, task in state["tasks"].items()}
        self.fill = {key: (task["size"], task["position"]) for key, task in state["tasks"].items()}
