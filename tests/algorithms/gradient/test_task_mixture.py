"""The task mixture's E-step and growth: responsibilities are distributions, a component is added for a clearly
new family and not for a family an existing component already fits, nor for a single task that only the candidate
fitted to it explains, and each component's meta-gradient is
weighted by its responsibility."""
from __future__ import annotations

import torch

from metalab.algorithms.gradient.maml import MAML
from metalab.algorithms.gradient.task_mixture import TaskMixture
from metalab.data.task import Task

OPTIONS = dict(kind="regression", backbone="mlp", mlp_hidden=[8], ways=1, inner_steps=1, inner_lr=0.01)


def constant_tasks(value: float, count: int = 2, seed: int = 0) -> Task:
    """Tasks whose function is the constant ``value`` on x in [-1, 1]."""
    x = torch.rand(count, 10, 1, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2 - 1
    y = torch.full_like(x, value)
    return Task(x[:, :5], y[:, :5], x[:, 5:], y[:, 5:])


def mixture(**options) -> TaskMixture:
    torch.manual_seed(0)
    learner = TaskMixture(TaskMixture.Options(**OPTIONS, concentration=0.5, max_components=3, grow_after=0.0,
                                                **options), (1,)).double()
    with torch.no_grad():  # component 0 predicts 0 everywhere: it fits the zero family exactly
        learner.components["head_weight"].zero_()
        learner.components["head_bias"].zero_()
    return learner


def test_no_component_for_a_fitted_family_and_one_for_a_clearly_new_family():
    learner = mixture()
    learner.meta_step(constant_tasks(0.0))
    assert int(learner.active) == 1  # the fitted family: the CRP prior keeps it in component 0
    learner.meta_step(constant_tasks(30.0, count=2, seed=1))
    assert int(learner.active) == 2  # a far new family of two tasks: the candidate fitted to one explains the other
    gamma = learner.responsibilities(constant_tasks(30.0, count=3, seed=2))
    torch.testing.assert_close(gamma.sum(-1), torch.ones(3, dtype=torch.float64))
    assert (gamma[:, 1] > 0.99).all() and learner.assignments(constant_tasks(0.0, seed=3)).eq(0).all()


def test_a_candidate_needs_evidence_from_a_task_it_was_not_fitted_to():
    learner = mixture()
    one_far_task = Task.cat([constant_tasks(30.0, count=1, seed=1), constant_tasks(0.0, count=1, seed=5)])
    learner.meta_step(one_far_task)
    # the far task alone proposed the candidate, and the other task is component 0's: nothing held out backs it
    assert int(learner.active) == 1


def test_responsibilities_are_distributions_and_weight_each_components_meta_gradient():
    learner = mixture(spawn_steps=0)  # a candidate equal to its source never wins: no growth
    with torch.no_grad():
        learner.components["head_bias"][1] = 2.0
    learner.active.fill_(2)
    learner.counts[1] = 1.0
    batch = constant_tasks(1.0, count=3, seed=4)
    gamma = learner.responsibilities(batch, on_query=True)
    assert ((gamma >= 0) & (gamma <= 1)).all() and torch.allclose(gamma.sum(-1), torch.ones(3, dtype=torch.float64))
    learner.meta_step(batch)
    assert int(learner.active) == 2
    # component k's gradient = sum_t gamma_tk * (MAML's gradient of task t from theta_k) / T
    for k in range(2):
        maml = MAML(MAML.Options(**OPTIONS), (1,)).double()
        expected = {name: torch.zeros_like(p) for name, p in maml.network.named_parameters()}
        for t in range(3):
            with torch.no_grad():
                for name, p in maml.network.named_parameters():
                    p.copy_(learner.components[name.replace(".", "_")][k])
            maml.zero_grad()
            maml.meta_step(batch[t : t + 1])
            for name, p in maml.network.named_parameters():
                expected[name] += gamma[t, k] * p.grad / 3
        for name in expected:
            torch.testing.assert_close(learner.components[name.replace(".", "_")].grad[k], expected[name])
