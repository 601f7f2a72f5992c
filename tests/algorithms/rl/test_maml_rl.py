"""MAML-RL: the meta-gradient through the inner policy-gradient step (finite differences), a meta-step, scores."""
from __future__ import annotations

import dataclasses

import torch

from metalab.algorithms.rl.components.policy_gradient import reinforce_loss
from metalab.algorithms.rl.maml_rl import MAMLRL, MAMLRLOptions
from metalab.envs.families import environment_tasks


def tiny(first_order: bool = False, **options) -> tuple[MAMLRL, object]:
    tasks = environment_tasks("navigation2d", "train", shots=3, queries=3, seed=0, horizon=6)
    learner = MAMLRL(MAMLRLOptions(name="maml-rl", hidden=[5], first_order=first_order, eval_steps=2, **options),
                     (2,), environment=tasks.family)
    return learner, tasks


def as_double(rollouts):
    return dataclasses.replace(rollouts, **{f.name: getattr(rollouts, f.name).double()
                                            for f in dataclasses.fields(rollouts)})


def post_update_loss(learner: MAMLRL, pre, post, advantages, create_graph: bool) -> torch.Tensor:
    fast = learner.adapted(pre, create_graph=create_graph)
    policy = learner.policy.distribution(post.observations, fast)
    return reinforce_loss(policy.log_prob(post.actions), advantages, post.mask).mean()


def test_the_meta_gradient_goes_through_the_inner_step_as_finite_differences_say():
    learner, tasks = tiny()
    batch = tasks.batch(0, 2)
    *pre, post = learner.rollouts(batch, 1, 3)
    learner.policy.double()
    pre, post = [as_double(r) for r in pre], as_double(post)
    advantages = learner.advantages(post)
    params = list(learner.policy.parameters())
    exact = torch.autograd.grad(post_update_loss(learner, pre, post, advantages, True), params)
    first_order = torch.autograd.grad(post_update_loss(learner, pre, post, advantages, False), params)
    direction = [torch.randn_like(p, generator=torch.Generator().manual_seed(i)) for i, p in enumerate(params)]
    eps, values = 1e-5, []
    for sign in (1, -1):
        with torch.no_grad():
            for p, d in zip(params, direction):
                p.add_(sign * eps * d)
        values.append(float(post_update_loss(learner, pre, post, advantages, False).detach()))
        with torch.no_grad():
            for p, d in zip(params, direction):
                p.sub_(sign * eps * d)
    numeric = (values[0] - values[1]) / (2 * eps)
    analytic = sum(float((g * d).sum()) for g, d in zip(exact, direction))
    dropped = sum(float((g * d).sum()) for g, d in zip(first_order, direction))
    assert abs(analytic - numeric) < 1e-6 * max(1.0, abs(numeric))
    assert abs(dropped - numeric) > 1e-4 * abs(numeric)  # the first-order gradient misses the second-order terms


def test_a_meta_step_is_a_trpo_step_within_the_kl_bound():
    for first_order in (False, True):
        learner, tasks = tiny(first_order)
        before = [p.detach().clone() for p in learner.parameters()]
        metrics = learner.meta_step(tasks.batch(0, 2))
        assert float(metrics["step_fraction"]) > 0 and float(metrics["kl"]) <= 0.01
        assert float(metrics["loss_after"]) < float(metrics["loss"])
        assert any(not torch.equal(b, p) for b, p in zip(before, learner.parameters()))
        assert all(p.grad is None for p in learner.parameters())  # TRPO applied its own update


def test_pretrained_multi_task_trpo_has_no_inner_step_and_scores_every_stage():
    learner, tasks = tiny(inner_steps=0)
    metrics = learner.meta_step(tasks.batch(0, 2))
    assert "return_pre" not in metrics
    scores = learner.scores(tasks.fixed(3).stream.batch(0, 3))
    assert sorted(scores) == ["return", "return_0", "return_1"]
    assert all(v.shape == (3,) for v in scores.values())


def test_scores_are_a_function_of_the_tasks_and_the_weights():
    learner, tasks = tiny()
    batch = tasks.batch(5, 2)
    one, two = learner.scores(batch), learner.scores(batch)
    assert all(torch.equal(one[k], two[k]) for k in one)
