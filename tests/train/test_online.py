"""FTML's loop against its algorithm box (Finn et al. 2019, Algorithm 1) on a 3-task stream, checked by hand, and
the baselines' updates (joint training, training from scratch)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from metalab.algorithms.gradient.maml import MAML
from metalab.data.task import Task
from metalab.train.online import OnlineOptions, TaskBuffer, accuracy, run_online

WAYS = 2


def stream(count: int = 3, pool: int = 4, test: int = 4) -> list[Task]:
    """``count`` tiny 2-way tasks on 3-vectors: ``pool`` datapoints to reveal, ``test`` held-out queries."""
    generator = torch.Generator().manual_seed(0)
    tasks = []
    for _ in range(count):
        x = torch.randn(pool + test, 3, generator=generator)
        y = (x[:, 0] > 0).long()
        tasks.append(Task(x[:pool], y[:pool], x[pool:], y[pool:]))
    return tasks


def learner() -> MAML:
    torch.manual_seed(0)
    return MAML(MAML.Options(backbone="mlp", mlp_hidden=[4], ways=WAYS, inner_steps=1, inner_lr=0.1), (3,))


def test_ftml_follows_the_algorithm_box_on_three_tasks():
    events: list[tuple] = []
    options = OnlineOptions(arrival=2, max_data=4, updates=1, meta_batch=1, minibatch=2, target=0.0)
    records = run_online(learner(), stream(), options, "ftml", events)
    kinds = [event[0] for event in events if event[0] != "meta"]
    # per task: add it to B; per arrival of n=2 points: extend D_t, evaluate U_t(theta, D_t), then N_meta updates
    per_task = ["add", "data", "evaluate", "data", "evaluate", "final"]
    assert kinds == per_task * 3
    data = [(event[1], event[2]) for event in events if event[0] == "data"]
    assert data == [(0, 2), (0, 4), (1, 2), (1, 4), (2, 2), (2, 4)]  # |D_t| grows by n, up to N
    assert [event[2] for event in events if event[0] == "add"] == [1, 2, 3]  # B holds the tasks seen so far
    updates = [event for event in events if event[0] == "meta"]
    assert len(updates) == 6  # one after each of the 2 arrivals of each of the 3 tasks
    for _, t, chosen in updates:
        assert all(0 <= k <= t for k in chosen)  # only tasks already in the buffer, never a future one
    # each update comes after the arrival's evaluation: the new task is scored from the current theta first
    positions = [i for i, event in enumerate(events) if event[0] in ("evaluate", "meta")]
    assert [events[i][0] for i in positions] == ["evaluate", "meta"] * 6
    # target 0: reached at the first arrival, so the efficiency of every task is n datapoints
    assert [r.efficiency for r in records] == [2, 2, 2] and all(len(r.accuracies) == 2 for r in records)


def test_unreachable_target_records_no_efficiency_and_baselines_update_their_way():
    options = OnlineOptions(arrival=2, max_data=4, updates=1, meta_batch=1, minibatch=2, target=1.1)
    for method in ("toe", "ftl", "tfs"):
        events: list[tuple] = []
        records = run_online(learner(), stream(), options, method, events)
        assert all(r.efficiency is None for r in records)
        assert sum(event[0] == "joint" for event in events) == 6 and not any(e[0] == "meta" for e in events)
    with pytest.raises(ValueError, match="method must be one of"):
        run_online(learner(), stream(), options, "sgd")


def test_train_from_scratch_starts_every_task_from_the_initial_weights():
    # one arrival of the whole pool: U_t sees all of D_t, whatever the order it was revealed in
    options = OnlineOptions(arrival=4, max_data=4, updates=10, meta_batch=1, minibatch=2, lr=0.05)
    tasks = stream(test=200)
    fresh = [accuracy(learner(), task.support_x, task.support_y, task, adapt=True) for task in tasks]
    scratch = run_online(learner(), tasks, options, "tfs")
    assert [r.accuracies[0] for r in scratch] == fresh
    joint = run_online(learner(), tasks, options, "ftl")
    assert joint[0].accuracies[0] == fresh[0] and [r.accuracies[0] for r in joint[1:]] != fresh[1:]


def test_the_buffer_splits_disjoint_minibatches_when_it_can():
    buffer = TaskBuffer()
    k = buffer.add(torch.arange(8.0).view(8, 1), torch.arange(8))
    x_tr, y_tr, x_val, y_val = buffer.minibatch(k, 4, np.random.default_rng(0))
    assert set(y_tr.tolist()).isdisjoint(y_val.tolist()) and len(y_tr) == len(y_val) == 4
    x_tr, y_tr, x_val, y_val = buffer.minibatch(k, 6, np.random.default_rng(0))  # 12 > 8: with replacement
    assert len(y_tr) == len(y_val) == 6 and torch.equal(x_tr[:, 0].long(), y_tr)
