"""Reptile's inner Adam against torch.optim.Adam: moments carried from task to task and across meta-steps (the
authors' code keeps one Adam for the whole run), evaluation starting from them without changing them, a fresh
Adam per task on request, results that no execution option changes, and the moments surviving checkpoints."""
from __future__ import annotations

import copy
import json
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from test_gradient_learners import build, make_tasks

from metalab.algorithms.gradient.reptile import Reptile
from metalab.config import compose
from metalab.train.checkpoint import load_checkpoint
from metalab.train.trainer import Trainer

LR, BETAS, STEPS = 0.01, (0.0, 0.999), 3


def compared(learner: Reptile) -> list[bool]:
    """Which parameters to compare: not the convolution biases that the next BatchNorm cancels. Their gradient is
    zero up to rounding, and Adam turns the rounding noise of one implementation into +-lr steps (without any
    effect on the outputs)."""
    return [not (name.startswith("body.blocks.") and name.endswith(".0.bias"))
            for name, _ in learner.network.named_parameters()]


def reptile(speed: dict | None = None, **options) -> Reptile:
    settings = dict(inner_steps=STEPS, inner_lr=LR, inner_optimizer="adam", adam_betas=list(BETAS), inner_batch=0,
                    inner_batch_test=0, inner_steps_test=2)
    return build(Reptile, speed, **{**settings, **options})


def adam_on_task(network: torch.nn.Module, theta: list[torch.Tensor], optimizer: torch.optim.Adam,
                 x: torch.Tensor, y: torch.Tensor, steps: int) -> list[torch.Tensor]:
    """``steps`` of ``optimizer`` on one task from weights ``theta`` (the module in train mode: batch statistics)."""
    with torch.no_grad():
        for p, value in zip(network.parameters(), theta):
            p.copy_(value)
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(network(x), y).backward()
        optimizer.step()
    return [p.detach().clone() for p in network.parameters()]


def reference(learner: Reptile) -> tuple[torch.nn.Module, torch.optim.Adam]:
    network = copy.deepcopy(learner.network)
    return network, torch.optim.Adam(network.parameters(), lr=LR, betas=BETAS, eps=1e-8)


def second_moments(optimizer: torch.optim.Adam) -> list[torch.Tensor]:
    return [optimizer.state[p]["exp_avg_sq"] for group in optimizer.param_groups for p in group["params"]]


def buffers(learner: Reptile, kind: str) -> list[torch.Tensor]:
    return [learner.adam_moments.get_buffer(f"{kind}-{name.replace('.', '-')}") for name, _ in
            learner.network.named_parameters()]


def step_matches_reference(learner: Reptile, network: torch.nn.Module,
                           optimizer_for_task: Callable[[], torch.optim.Adam], tasks: int, seed: int) -> None:
    """One meta-step: ``.grad`` = theta - the mean of the weights that ``optimizer_for_task()`` adapts each task to."""
    batch = make_tasks(count=tasks, seed=seed)
    learner.zero_grad()
    learner.meta_step(batch)
    theta = [p.detach().clone() for p in learner.network.parameters()]
    adapted = [adam_on_task(network, theta, optimizer_for_task(), batch.support_x[t], batch.support_y[t], STEPS)
               for t in range(tasks)]
    for i, (p, check) in enumerate(zip(learner.network.parameters(), compared(learner))):
        assert not check or torch.allclose(p.grad, theta[i] - sum(a[i] for a in adapted) / tasks, atol=1e-12)


def test_carried_moments_are_one_adam_run_over_the_tasks_in_turn():
    learner = reptile()
    network, optimizer = reference(learner)
    for meta_step in range(2):
        step_matches_reference(learner, network, lambda: optimizer, tasks=3, seed=meta_step)
        for mine, theirs, check in zip(buffers(learner, "second"), second_moments(optimizer), compared(learner)):
            assert not check or torch.allclose(mine, theirs, rtol=1e-10, atol=1e-16)
        assert int(learner.adam_moments.steps) == 3 * STEPS * (meta_step + 1)
        with torch.no_grad():  # the trainer's SGD step with meta step size 1
            for p in learner.network.parameters():
                p -= p.grad


def test_per_task_moments_are_a_fresh_adam_for_every_task():
    learner = reptile(inner_adam_state="per_task")
    assert learner.adam_moments is None and not any(key.startswith("adam_moments") for key in learner.state_dict())
    network, _ = reference(learner)
    for meta_step in range(2):
        step_matches_reference(learner, network, lambda: torch.optim.Adam(network.parameters(), lr=LR, betas=BETAS,
                                                                          eps=1e-8), tasks=2, seed=meta_step)


def test_evaluation_starts_from_the_moments_and_leaves_them_unchanged():
    learner = reptile()
    network, optimizer = reference(learner)
    train = make_tasks(count=2, seed=1)
    learner.meta_step(train)
    theta = [p.detach().clone() for p in learner.network.parameters()]
    for t in range(2):
        adam_on_task(network, theta, optimizer, train.support_x[t], train.support_y[t], STEPS)
    saved = {name: b.clone() for name, b in learner.adam_moments.named_buffers()}
    test = make_tasks(count=2, seed=2)
    predictions = learner.eval().predict(test)
    for name, b in learner.adam_moments.named_buffers():
        assert torch.equal(b, saved[name]), name
    state = copy.deepcopy(optimizer.state_dict())
    for t in range(2):
        optimizer.load_state_dict(copy.deepcopy(state))  # every test task starts from the same moments
        adam_on_task(network, theta, optimizer, test.support_x[t], test.support_y[t], 2)
        with torch.no_grad():
            assert torch.allclose(predictions[t], network(test.query_x[t]), atol=1e-10)


@pytest.mark.parametrize("options", [
    {"inner_optimizer": "adam"}, {"inner_optimizer": "adam", "inner_batch": 3, "inner_batch_test": 2},
    {"inner_optimizer": "adam", "inner_adam_state": "per_task", "inner_batch": 3},
    {"inner_optimizer": "sgd", "inner_batch": 2, "inner_batch_test": 4}],
    ids=["carried", "carried-minibatches", "per-task-minibatches", "sgd-minibatches"])
def test_no_execution_option_changes_the_result(options):
    """Task slices of any size, the reference engine: the same meta-gradient, moments and predictions
    (carried moments make the tasks sequential; minibatches are drawn for the whole meta-batch)."""
    batch, test = make_tasks(count=4, shots=3, seed=3), make_tasks(count=3, shots=3, seed=4)
    results = []
    for speed in ({"task_chunk": 1}, {"task_chunk": 0}, {"task_chunk": 3}, {"engine": "reference"}):
        learner = reptile(speed, **options)
        torch.manual_seed(7)
        learner.meta_step(batch)
        predictions = learner.eval().predict(test)
        # not the convolution biases that BatchNorm cancels (see compared()): Adam turns their rounding noise
        # into +-lr steps, which differ between kernels and never reach an output
        grads = [p.grad.clone() for p, check in zip(learner.network.parameters(), compared(learner)) if check]
        moments = [] if learner.adam_moments is None else [
            b.clone() for name, b in learner.adam_moments.named_buffers() if not name.endswith("-0-bias")]
        results.append((grads, moments, predictions))
    for grads, moments, predictions in results[1:]:
        assert all(torch.allclose(a, b, atol=1e-12) for a, b in zip(grads, results[0][0]))
        assert all(torch.allclose(a, b, rtol=1e-9, atol=1e-15) for a, b in zip(moments, results[0][1]))
        assert torch.allclose(predictions, results[0][2], atol=1e-10)


def test_moments_travel_in_the_state_dict_and_old_checkpoints_load_with_a_fresh_adam():
    learner = reptile()
    learner.meta_step(make_tasks(count=2))
    state = learner.state_dict()
    assert any(key.startswith("adam_moments.second-") for key in state) and int(state["adam_moments.steps"]) > 0
    restored = reptile()
    restored.load_state_dict(state)
    test = make_tasks(count=2, seed=5)
    assert torch.equal(restored.eval().predict(test), learner.eval().predict(test))
    old = {key: value for key, value in state.items() if not key.startswith("adam_moments.")}
    with pytest.warns(UserWarning, match="no inner Adam moments"):
        restored.load_state_dict(old)
    assert int(restored.adam_moments.steps) == 0
    assert all(not b.any() for b in buffers(restored, "second"))


def test_unknown_adam_state_mode_is_a_clear_error():
    with pytest.raises(ValueError, match="inner_adam_state must be one of carried, per_task"):
        reptile(inner_adam_state="global")


def test_resumed_training_continues_the_carried_moments_exactly(image_folders, tmp_path):
    def config(run_dir, steps):
        recipe = {
            "name": "test-reptile",
            "data": {"dataset": "folder", "train_split": str(image_folders["train"]),
                     "val_split": str(image_folders["val"]), "test_split": str(image_folders["test"]),
                     "image_size": 28, "channels": 1},
            "task": {"ways": 3, "shots": 2, "queries": 1, "meta_batch": 2},
            "eval": {"ways": 3, "shots": 1, "queries": 2, "episodes": 6, "val_episodes": 4},
            "learner": {"name": "reptile", "hidden": 8, "ways": 3, "inner_steps": 2, "inner_steps_test": 2,
                        "inner_lr": 0.001, "inner_optimizer": "adam", "inner_batch": 3},
            "speed": {"eval_batch": 3},
            "optim": {"name": "sgd", "lr": 1.0},
            "train": {"steps": steps, "val_every": 100, "ckpt_every": 2, "log_every": 1, "progress": False},
            "run": {"dir": str(run_dir), "tensorboard": False},
        }
        return compose(recipe, [])

    Trainer(config(tmp_path / "straight", 4)).fit()
    Trainer(config(tmp_path / "split", 2)).fit()
    Trainer(config(tmp_path / "split", 4), resume=True).fit()
    straight = load_checkpoint(tmp_path / "straight" / "last.pt")["model"]
    resumed = load_checkpoint(tmp_path / "split" / "last.pt")["model"]
    assert int(straight["adam_moments.steps"]) == 4 * 2 * 2  # steps x tasks (one slice each) x inner steps
    for name, tensor in straight.items():
        assert torch.equal(tensor, resumed[name]), name
    results = json.loads((tmp_path / "split" / "results.json").read_text())
    assert 0.0 <= results["test"]["accuracy"] <= 1.0
