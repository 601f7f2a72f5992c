"""E-MAML: the exploration term credits the pre-update episodes; with weight 0 it is MAML-RL."""
from __future__ import annotations

import torch

from metalab.algorithms.rl.components.rollouts import collect
from metalab.algorithms.rl.emaml import EMAML, EMAMLOptions
from metalab.algorithms.rl.maml_rl import MAMLRL, MAMLRLOptions
from metalab.envs.families import environment_tasks


def learners(weight: float) -> tuple[MAMLRL, EMAML, object]:
    tasks = environment_tasks("navigation2d", "train", shots=3, queries=3, seed=0, horizon=6)
    torch.manual_seed(0)
    maml = MAMLRL(MAMLRLOptions(name="maml-rl", hidden=[5]), (2,), environment=tasks.family)
    emaml = EMAML(EMAMLOptions(name="emaml", hidden=[5], exploration_weight=weight), (2,), environment=tasks.family)
    emaml.load_state_dict(maml.state_dict())
    return maml, emaml, tasks


def test_with_weight_zero_emaml_steps_as_maml_rl_and_otherwise_differs():
    maml, emaml, tasks = learners(0.0)
    maml.meta_step(tasks.batch(0, 3))
    emaml.meta_step(tasks.batch(0, 3))
    assert all(torch.equal(a, b) for a, b in zip(maml.parameters(), emaml.parameters()))
    maml, emaml, tasks = learners(1.0)
    maml.meta_step(tasks.batch(0, 3))
    emaml.meta_step(tasks.batch(0, 3))
    assert any(not torch.equal(a, b) for a, b in zip(maml.parameters(), emaml.parameters()))


def test_the_exploration_gradient_is_the_score_function_term():
    """At theta_old the term's gradient is -lambda mean_t c_i grad log pi(a_t|s_t) over the pre-update steps,
    c_i task i's post-update return normalised over the meta-batch."""
    _, emaml, tasks = learners(0.5)
    batch = tasks.batch(0, 3)
    pre = collect(batch, 3, emaml.policy.distribution, round_=0)
    post = collect(batch, 3, emaml.policy.distribution, round_=1)
    params = list(emaml.policy.parameters())
    term = torch.autograd.grad(emaml.exploration_loss([pre], post, graph=True), params)
    returns = post.returns().mean(1)
    credit = (returns - returns.mean()) / (returns.std() + 1e-8)
    log_probs = emaml.policy.distribution(pre.observations).log_prob(pre.actions)
    per_task = (log_probs * pre.mask).sum((1, 2)) / pre.mask.sum((1, 2))
    expected = torch.autograd.grad(-0.5 * (credit * per_task).mean(), params)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(term, expected))
