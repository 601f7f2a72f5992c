"""RL^2: the hidden state runs through the episodes of a trial and starts afresh with each trial."""
from __future__ import annotations

import torch

from metalab.algorithms.rl.rl2 import RL2, RL2Options, trial_ends
from metalab.envs.families import environment_tasks


def tiny(name: str = "bandit-2", shots: int = 3, queries: int = 2, observation: int = 1):
    tasks = environment_tasks(name, "train", shots=shots, queries=queries, seed=0)
    return RL2(RL2Options(name="rl2", hidden_size=6), (observation,), environment=tasks.family), tasks


def test_the_recorded_policy_is_the_gru_run_over_each_trial_from_a_zero_state():
    learner, tasks = tiny("tabular-mdp", shots=2, queries=2, observation=10)
    rollouts, inputs = learner.trials(tasks.batch(0, 2))
    assert inputs.shape[:3] == (2, 2, 20)  # 2 tasks, 2 trials, 2 episodes of 10 steps
    policy, _ = learner.policy(inputs.flatten(0, 1))
    recomputed = policy.log_prob(rollouts.actions.flatten(0, 1)).view_as(rollouts.log_probs)
    assert torch.allclose(recomputed, rollouts.log_probs, atol=1e-5)
    # the first step of each trial sees no previous action, reward or done: a trial starts afresh
    assert (inputs[:, :, 0, 10:] == 0).all()
    # the first step of the second episode sees the first episode's end (done flag) and its last reward
    assert (inputs[:, :, 10, -1] == 1).all() and torch.equal(inputs[:, :, 10, -2], rollouts.rewards[:, :, 9])
    assert rollouts.dones[:, :, 9].eq(1).all() and rollouts.dones[:, :, 19].eq(1).all()


def test_the_hidden_state_carries_across_episodes_but_not_across_trials():
    learner, tasks = tiny()
    _, inputs = learner.trials(tasks.batch(0, 1))
    trial = inputs[0, 0:1]  # [1, 3 pulls, input]
    changed = trial.clone()
    changed[0, 1, -2] = 1 - changed[0, 1, -2]  # another reward seen after the first pull
    before, _ = learner.policy(trial)
    after, _ = learner.policy(changed)
    assert torch.allclose(before.logits[0, 0], after.logits[0, 0])  # the past is not changed
    assert not torch.allclose(before.logits[0, 2], after.logits[0, 2])  # the next episode remembers the reward
    # a new trial: the state after one trial, fed to the next, would change the policy; a fresh one does not
    _, carried = learner.policy(trial)
    fresh, _ = learner.policy(inputs[0, 1:2, :1])
    continued, _ = learner.policy(inputs[0, 1:2, :1], carried)
    assert torch.allclose(fresh.logits, learner.policy(inputs[0, 1:2, :1], torch.zeros_like(carried))[0].logits)
    assert not torch.allclose(fresh.logits, continued.logits)


def test_trial_ends_mark_the_last_valid_step_of_each_trial():
    mask = torch.tensor([[[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]]])
    rollouts = type("R", (), {"mask": mask})()
    assert trial_ends(rollouts).tolist() == [[[0, 0, 1, 0], [0, 0, 0, 1]]]


def test_a_meta_step_changes_the_weights_and_scores_the_trial():
    learner, tasks = tiny()
    before = [p.detach().clone() for p in learner.parameters()]
    metrics = learner.meta_step(tasks.batch(0, 4))
    assert float(metrics["kl"]) <= 0.01
    assert any(not torch.equal(b, p) for b, p in zip(before, learner.parameters()))
    scores = learner.scores(tasks.batch(0, 3))
    assert sorted(scores) == ["first_episode", "last_episode", "return"]
    assert ((scores["return"] >= 0) & (scores["return"] <= 3)).all()  # 3 Bernoulli pulls
