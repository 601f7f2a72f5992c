"""Online meta-learning over a task stream: FTML (Finn et al. 2019, "Online Meta-Learning") and its baselines.

Algorithm 1 of the paper (follow the meta leader), for tasks T_1, T_2, ... revealed one at a time:

    B <- []                                            the task buffer
    for t = 1, 2, ...:
        D_t <- {};  B <- B + [T_t]
        while |D_t| < N:
            D_t <- D_t + (n new datapoints of T_t)
            w_t <- U_t(theta, D_t)                     adapt from the current meta-parameters
            if accuracy(w_t) >= gamma (first time): efficiency_t = |D_t|      the paper's learning-efficiency metric
            repeat N_meta times:
                T_k ~ B  (uniform over the tasks seen so far, current one included)
                D_k^tr, D_k^val ~ D_k  (minibatches)
                theta <- theta - beta * grad_theta L(U_k(theta, D_k^tr), D_k^val)     (eq. 5: MAML's meta-gradient)
        final_t = accuracy(U_t(theta, D_t))

The baselines of the paper's section 6 share the loop and replace the update and the prediction:

    tfs  train from scratch: a fresh network for each task, trained on D_t alone;
    toe  train on everything: one network trained on all data seen so far, predicting without adaptation;
    ftl  follow the leader: the same joint training, then fine-tuned on D_t (U_t) before predicting.

Accuracy is on the task's held-out queries (its test images), never on D_t. :func:`run_online` returns one
:class:`TaskRecord` per task; ``events`` (when given a list) receives the order of operations, which the tests
check against the algorithm box. :class:`OnlineMethod` is the same loop one task at a time, with its state saved
and restored between tasks (``metalab online``, :mod:`metalab.train.online_run`).
"""
from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from metalab.algorithms.gradient.base import GradientLearner
from metalab.data.streams import IndexedTasks
from metalab.data.task import Task

METHODS = ("ftml", "ftl", "toe", "tfs")


@dataclass
class OnlineOptions:
    #: n, datapoints revealed per arrival.
    arrival: int = 10
    #: N, the most datapoints a task reveals.
    max_data: int = 100
    #: N_meta, parameter updates after each arrival.
    updates: int = 5
    #: tasks per meta-update (FTML) or examples' tasks per joint step.
    meta_batch: int = 4
    #: datapoints of D_k^tr and of D_k^val in one meta-update (drawn with replacement when D_k is smaller).
    minibatch: int = 10
    #: gamma, the accuracy a task must reach for its efficiency to be recorded.
    target: float = 0.9
    #: meta learning rate beta (Adam).
    lr: float = 1e-3
    seed: int = 0


@dataclass
class TaskRecord:
    """One task of the stream: datapoints needed to reach the target (None: not within N) and the accuracies."""

    task: int
    efficiency: int | None
    final_accuracy: float
    accuracies: list[float] = field(default_factory=list)  # after each arrival


class TaskBuffer:
    """The tasks seen so far, each with the datapoints revealed so far (B and the D_k of Algorithm 1)."""

    def __init__(self) -> None:
        self.data: list[tuple[Tensor, Tensor]] = []

    def add(self, x: Tensor, y: Tensor) -> int:
        self.data.append((x, y))
        return len(self.data) - 1

    def extend(self, k: int, x: Tensor, y: Tensor) -> None:
        old_x, old_y = self.data[k]
        self.data[k] = (torch.cat([old_x, x]), torch.cat([old_y, y]))

    def __len__(self) -> int:
        return len(self.data)

    def minibatch(self, k: int, size: int, rng: np.random.Generator) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """D_k^tr and D_k^val: disjoint when D_k holds 2 * size points, else drawn with replacement."""
        x, y = self.data[k]
        if len(x) >= 2 * size:
            order = torch.as_tensor(rng.permutation(len(x))[: 2 * size])
        else:
            order = torch.as_tensor(rng.integers(len(x), size=2 * size))
        tr, val = order[:size], order[size:]
        return x[tr], y[tr], x[val], y[val]

    def everything(self) -> tuple[Tensor, Tensor]:
        return torch.cat([x for x, _ in self.data]), torch.cat([y for _, y in self.data])


def accuracy(learner: GradientLearner, x: Tensor, y: Tensor, test: Task, adapt: bool) -> float:
    """Accuracy on the task's test queries of U_t(theta, D_t) (``adapt``) or of theta itself."""
    batch = Task(x[None], y[None], test.query_x[None], test.query_y[None])
    with torch.no_grad():  # predict enables the gradients its adaptation needs
        logits = learner.predict(batch, steps=None if adapt else 0)[0]
    return float((logits.argmax(-1) == test.query_y).double().mean())


def joint_step(learner: GradientLearner, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor) -> None:
    """One supervised step of the shared network on (x, y): the update of TOE, FTL and TFS."""
    optimizer.zero_grad()
    F.cross_entropy(learner.network(x), y).backward()
    optimizer.step()


class OnlineMethod:
    """One method (``ftml`` or a baseline) over a stream, task by task: the learner, its optimiser, the buffer, the
    random generator and the records so far. :meth:`state_dict` and :meth:`load_state_dict` save and restore it
    between two tasks (the buffer as each task's order of datapoints, rebuilt from the stream), so that a resumed
    stream run goes on exactly as the uninterrupted one would."""

    def __init__(self, learner: GradientLearner, options: OnlineOptions, method: str = "ftml",
                 events: list[tuple] | None = None) -> None:
        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
        self.learner, self.options, self.method = learner, options, method
        self.log = events if events is not None else []
        self.rng = np.random.default_rng(options.seed)
        self.initial = copy.deepcopy(learner.state_dict())
        self.optimizer = torch.optim.Adam(learner.parameters(), lr=options.lr)
        self.buffer = TaskBuffer()
        self.records: list[TaskRecord] = []
        #: per task seen, the order in which its datapoints were revealed (indices into its support set)
        self.orders: list[Tensor] = []

    def learn(self, task: Task) -> TaskRecord:
        """Task T_t of Algorithm 1 (or of the baseline): reveal its data arrival by arrival, score, update."""
        options, learner, rng, log = self.options, self.learner, self.rng, self.log
        t, method, adapt = len(self.records), self.method, self.method != "toe"
        if method == "tfs":
            learner.load_state_dict(self.initial)
            self.optimizer = torch.optim.Adam(learner.parameters(), lr=options.lr)
        order = torch.as_tensor(rng.permutation(len(task.support_x))[: options.max_data])
        self.orders.append(order)
        pool_x, pool_y = task.support_x[order], task.support_y[order]
        k = self.buffer.add(pool_x[:0], pool_y[:0])
        log.append(("add", t, len(self.buffer)))
        efficiency, accuracies = None, []
        for start in range(0, len(order), options.arrival):
            self.buffer.extend(k, pool_x[start : start + options.arrival], pool_y[start : start + options.arrival])
            seen = len(self.buffer.data[k][0])
            log.append(("data", t, seen))
            accuracies.append(accuracy(learner, *self.buffer.data[k], task, adapt=adapt))
            log.append(("evaluate", t, seen))
            if efficiency is None and accuracies[-1] >= options.target:
                efficiency = seen
            for _ in range(options.updates):
                self._update(t, k)
        record = TaskRecord(t, efficiency, accuracy(learner, *self.buffer.data[k], task, adapt=adapt), accuracies)
        self.records.append(record)
        log.append(("final", t))
        return record

    def _update(self, t: int, k: int) -> None:
        """One of the N_meta updates after an arrival: FTML's meta-update on buffer tasks, or a baseline's step."""
        options, rng = self.options, self.rng
        if self.method == "ftml":
            chosen = [int(rng.integers(len(self.buffer))) for _ in range(options.meta_batch)]
            parts = [self.buffer.minibatch(j, options.minibatch, rng) for j in chosen]
            self.optimizer.zero_grad()
            self.learner.meta_step(Task(*(torch.stack(part) for part in zip(*parts))))
            self.optimizer.step()
            self.log.append(("meta", t, tuple(chosen)))
        else:
            x, y = self.buffer.data[k] if self.method == "tfs" else self.buffer.everything()
            pick = torch.as_tensor(rng.integers(len(x), size=options.meta_batch * options.minibatch))
            joint_step(self.learner, self.optimizer, x[pick], y[pick])
            self.log.append(("joint", t))

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to go on with the next task (taken between two tasks)."""
        return {"method": self.method, "model": self.learner.state_dict(), "optimizer": self.optimizer.state_dict(),
                "initial": self.initial, "rng": self.rng.bit_generator.state, "orders": list(self.orders),
                "records": [asdict(record) for record in self.records]}

    def load_state_dict(self, state: dict[str, Any], stream: IndexedTasks) -> None:
        """Restore :meth:`state_dict`'s state; the buffer is rebuilt from ``stream``'s tasks 0, 1, ... in order."""
        if state["method"] != self.method:
            raise ValueError(f"the saved state is {state['method']!r}'s, not {self.method!r}'s")
        self.learner.load_state_dict(state["model"])
        self.initial = state["initial"]
        if self.method == "tfs":  # its optimiser is made afresh for each task, as in learn()
            self.optimizer = torch.optim.Adam(self.learner.parameters(), lr=self.options.lr)
        self.optimizer.load_state_dict(state["optimizer"])
        self.rng.bit_generator.state = state["rng"]
        self.orders = [torch.as_tensor(order) for order in state["orders"]]
        self.records = [TaskRecord(**record) for record in state["records"]]
        self.buffer = TaskBuffer()
        for t, order in enumerate(self.orders):
            task = stream.task(t)
            self.buffer.add(task.support_x[order], task.support_y[order])


def run_online(learner: GradientLearner, stream: Iterable[Task], options: OnlineOptions, method: str = "ftml",
               events: list[tuple] | None = None) -> list[TaskRecord]:
    """Algorithm 1 (``ftml``) or a baseline over ``stream`` (tasks with support = the data to reveal, in a fixed
    random order, and queries = the held-out test set). The learner's weights are trained in place."""
    online = OnlineMethod(learner, options, method, events)
    return [online.learn(task) for task in stream]
