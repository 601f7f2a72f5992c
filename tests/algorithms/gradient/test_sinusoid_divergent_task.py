"""learner.inner_grad_clip on the task that made the sinusoid-reptile-5shot recipe diverge.

The fixture holds the recipe's network after 7000 meta-iterations (constant meta step, seed 0) and task 23 of
meta-iteration 7078's meta-batch: four of its five support x lie near 4.5. Five inner SGD steps at lr 0.02 took its
support loss from 17.5 to 8e18, and the run stopped with a NaN loss at iteration 7079 (benchmarks/gradient/RESULTS.md).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from metalab.config import load_recipe
from metalab.data.task import Task
from metalab.nn.losses import regression_losses
from metalab.train.build import build_learner

FIXTURE = Path(__file__).parent / "data" / "sinusoid_reptile_divergent_task.pt"


def recipe_learner(*overrides: str):
    config = load_recipe("sinusoid-reptile-5shot", list(overrides))
    learner = build_learner(config, (1,))
    saved = torch.load(FIXTURE)
    learner.network.load_state_dict(saved["network"])
    task = Task(saved["support_x"][None], saved["support_y"][None], saved["query_x"][None], saved["query_y"][None])
    return learner, task


def support_loss_after_adaptation(learner, task: Task, training: bool) -> float:
    fast = learner.adapt_tasks(task.support_x, task.support_y, training=training)
    with torch.no_grad():
        outputs = torch.func.functional_call(learner.network, {n: v[0] for n, v in fast.items()}, (task.support_x[0],))
    return float(regression_losses(outputs[None], task.support_y))


@pytest.mark.parametrize("training", [True, False], ids=["5 training steps", "32 test steps"])
def test_the_recipe_clip_keeps_the_divergent_task_finite(training):
    learner, task = recipe_learner()
    assert learner.options.inner_grad_clip == 50.0
    with torch.no_grad():
        before = float(regression_losses(learner.network(task.support_x[0])[None], task.support_y))
    after = support_loss_after_adaptation(learner, task, training)
    assert before > 10 and after < 0.5 * before, (before, after)


def test_without_the_clip_the_task_diverges():
    learner, task = recipe_learner("learner.inner_grad_clip=0")
    after = support_loss_after_adaptation(learner, task, training=True)
    assert not after < 1e12, after  # 8e18 (or inf / nan)


def test_a_negative_clip_is_refused_with_the_option_name():
    with pytest.raises(ValueError, match="learner.inner_grad_clip must be >= 0"):
        build_learner(load_recipe("sinusoid-reptile-5shot", ["learner.inner_grad_clip=-1"]), (1,))
