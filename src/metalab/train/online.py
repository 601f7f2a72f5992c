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
check against the algorithm box.
"""
from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from metalab.algorithms.gradient.base import GradientLearner
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


def run_online(learner: GradientLearner, stream: Iterable[Task], options: OnlineOptions, method: str = "ftml",
               events: list[tuple] | None = None) -> list[TaskRecord]:
    """Algorithm 1 (``ftml``) or a baseline over ``stream`` (tasks with support = the data to reveal, in a fixed
    random order, and queries = the held-out test set). The learner's weights are trained in place."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    log = events if events is not None else []
    rng = np.random.default_rng(options.seed)
    initial = copy.deepcopy(learner.state_dict())
    optimizer = torch.optim.Adam(learner.parameters(), lr=options.lr)
    buffer, records = TaskBuffer(), []
    for t, task in enumerate(stream):
        if method == "tfs":
            learner.load_state_dict(initial)
            optimizer = torch.optim.Adam(learner.parameters(), lr=options.lr)
        order = torch.as_tensor(rng.permutation(len(task.support_x))[: options.max_data])
        pool_x, pool_y = task.support_x[order], task.support_y[order]
        k = buffer.add(pool_x[:0], pool_y[:0])
        log.append(("add", t, len(buffer)))
        efficiency, accuracies = None, []
        for start in range(0, len(order), options.arrival):
            buffer.extend(k, pool_x[start : start + options.arrival], pool_y[start : start + options.arrival])
            seen = len(buffer.data[k][0])
            log.append(("data", t, seen))
            accuracies.append(accuracy(learner, *buffer.data[k], task, adapt=method != "toe"))
            log.append(("evaluate", t, seen))
            if efficiency is None and accuracies[-1] >= options.target:
                efficiency = seen
            for _ in range(options.updates):
                if method == "ftml":
                    chosen = [int(rng.integers(len(buffer))) for _ in range(options.meta_batch)]
                    parts = [buffer.minibatch(j, options.minibatch, rng) for j in chosen]
                    optimizer.zero_grad()
                    learner.meta_step(Task(*(torch.stack(part) for part in zip(*parts))))
                    optimizer.step()
                    log.append(("meta", t, tuple(chosen)))
                else:
                    x, y = buffer.data[k] if method == "tfs" else buffer.everything()
                    pick = torch.as_tensor(rng.integers(len(x), size=options.meta_batch * options.minibatch))
                    joint_step(learner, optimizer, x[pick], y[pick])
                    log.append(("joint", t))
        records.append(TaskRecord(t, efficiency, accuracy(learner, *buffer.data[k], task, adapt=method != "toe"),
                                  accuracies))
        log.append(("final", t))
    return records
