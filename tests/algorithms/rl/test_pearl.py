"""PEARL: the posterior against closed forms and sequential Bayesian updates, the KL against torch.distributions, SAC's
targets by hand, where the encoder's gradient comes from, the replay buffers, and seeded reproducibility."""
from __future__ import annotations

import pytest
import torch
from torch.distributions import AffineTransform, Independent, Normal, TanhTransform, TransformedDistribution

from metalab.algorithms.registry import learner_class
from metalab.algorithms.rl.components.context import kl_to_unit_gaussian, product_of_gaussians
from metalab.algorithms.rl.components.replay import TaskReplayBuffers
from metalab.algorithms.rl.components.sac import SquashedGaussian, q_target, v_target
from metalab.envs.families import environment_family, environment_tasks


def tiny_pearl(**overrides):
    cls = learner_class("pearl")
    settings = dict(name="pearl", latent_size=3, hidden=[16], encoder_hidden=[16], batch_size=8, context_batch=5,
                    train_meta_batch=2, updates_per_step=2, initial_episodes=1, prior_episodes=1,
                    extra_posterior_episodes=1, replay_capacity=500)
    settings.update(overrides)
    return cls(cls.Options(**settings), (2,), environment=environment_family("navigation2d", horizon=6))


def test_the_product_of_two_gaussians_is_the_closed_form():
    # N(1, 1) * N(3, 1) is proportional to N(2, 1/2); N(0, 1) * N(4, 3): precision 4/3, mean (0 + 4/3) / (4/3) = 1
    means, variances = torch.tensor([[1.0, 0.0], [3.0, 4.0]]), torch.tensor([[1.0, 1.0], [1.0, 3.0]])
    mean, variance = product_of_gaussians(means, variances)
    assert torch.allclose(mean, torch.tensor([2.0, 1.0])) and torch.allclose(variance, torch.tensor([0.5, 0.75]))


def test_the_product_equals_sequential_bayesian_updates_and_ignores_order_and_masked_factors():
    torch.manual_seed(0)
    means, variances = torch.randn(6, 4), torch.rand(6, 4) + 0.1
    # sequential conjugate updates: belief N(m, v) times the factor N(mu_n, s_n) gives precision 1/v + 1/s_n
    m, v = means[0], variances[0]
    for mu, s in zip(means[1:], variances[1:]):
        m, v = (m / v + mu / s) / (1 / v + 1 / s), 1 / (1 / v + 1 / s)
    mean, variance = product_of_gaussians(means, variances)
    assert torch.allclose(mean, m, atol=1e-5) and torch.allclose(variance, v, atol=1e-6)
    order = torch.randperm(6)
    assert torch.allclose(product_of_gaussians(means[order], variances[order])[0], mean, atol=1e-5)
    mask = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 1.0])
    kept = mask.bool()
    masked = product_of_gaussians(means, variances, mask)
    dropped = product_of_gaussians(means[kept], variances[kept])
    assert torch.allclose(masked[0], dropped[0], atol=1e-5) and torch.allclose(masked[1], dropped[1])
    nothing = product_of_gaussians(means, variances, torch.zeros(6))
    assert torch.equal(nothing[0], torch.zeros(4)) and torch.equal(nothing[1], torch.ones(4))  # the prior


def test_the_kl_term_matches_torch_distributions():
    torch.manual_seed(1)
    mean, variance = torch.randn(3, 5), torch.rand(3, 5) + 0.05
    reference = torch.distributions.kl_divergence(Normal(mean, variance.sqrt()), Normal(0.0, 1.0)).sum(-1)
    assert torch.allclose(kl_to_unit_gaussian(mean, variance), reference, atol=1e-6)


def test_sac_targets_by_hand():
    # y_Q = scale r + (1 - d) gamma V'(s'): 2 * 1 + 0.9 * 10 = 11; 2 * -2 + 0 = -4
    y_q = q_target(torch.tensor([1.0, -2.0]), torch.tensor([0.0, 1.0]), torch.tensor([10.0, 5.0]), 0.9, 2.0)
    assert torch.allclose(y_q, torch.tensor([11.0, -4.0]))
    # y_V = min(Q1, Q2) - log pi: min(1, 3) - 0.5 = 0.5; min(5, 2) + 1 = 3
    y_v = v_target(torch.tensor([1.0, 5.0]), torch.tensor([3.0, 2.0]), torch.tensor([0.5, -1.0]))
    assert torch.allclose(y_v, torch.tensor([0.5, 3.0]))


def test_the_learners_critic_loss_is_the_bellman_error_computed_by_hand():
    torch.manual_seed(2)
    learner = tiny_pearl(gamma=0.9, reward_scale=3.0)
    context = torch.randn(2, 5, 5)  # 2 tasks, 5 transitions of (o [2], a [2], r)
    rl = {"observations": torch.randn(2, 4, 2), "actions": torch.rand(2, 4, 2) * 2 - 1, "rewards": torch.randn(2, 4),
          "next_observations": torch.randn(2, 4, 2), "terminals": torch.tensor([[0.0, 0, 1, 0], [0, 0, 0, 1]])}
    state = learner.generator.get_state()
    loss, kl, _ = learner.critic_loss(context, rl)
    learner.generator.set_state(state)
    with torch.no_grad():
        mean, variance = learner.encoder.posterior(context)
        z = mean + variance.sqrt() * torch.randn(mean.shape, generator=learner.generator)
        z = z.unsqueeze(1).expand(-1, 4, -1)
        v_next = learner.target_vf.net(torch.cat([rl["next_observations"], z], -1)).squeeze(-1)
        y = 3.0 * rl["rewards"] + (1 - rl["terminals"]) * 0.9 * v_next
        q1 = learner.qf1.net(torch.cat([rl["observations"], rl["actions"], z], -1)).squeeze(-1)
        q2 = learner.qf2.net(torch.cat([rl["observations"], rl["actions"], z], -1)).squeeze(-1)
        expected = ((q1 - y) ** 2).mean() + ((q2 - y) ** 2).mean()
    assert torch.allclose(loss, expected, atol=1e-5)
    assert torch.allclose(kl, kl_to_unit_gaussian(mean, variance).sum(), atol=1e-5)


def test_the_encoder_learns_from_the_critic_only():
    torch.manual_seed(3)
    learner = tiny_pearl()
    context = torch.randn(2, 5, 5)
    rl = {"observations": torch.randn(2, 4, 2), "actions": torch.rand(2, 4, 2) * 2 - 1, "rewards": torch.randn(2, 4),
          "next_observations": torch.randn(2, 4, 2), "terminals": torch.zeros(2, 4)}
    q_loss, _, z = learner.critic_loss(context, rl)
    v_loss, policy_loss = learner.actor_losses(rl["observations"], z)  # z still holds its graph to the encoder
    encoder = list(learner.encoder.parameters())
    from_actor = torch.autograd.grad(v_loss + policy_loss, encoder, allow_unused=True, retain_graph=True)
    assert all(g is None or not g.any() for g in from_actor)
    from_critic = torch.autograd.grad(q_loss, encoder, retain_graph=True)
    assert any(g.abs().sum() > 0 for g in from_critic)
    policy = list(learner.policy.parameters())
    assert all(g is None for g in torch.autograd.grad(q_loss, policy, allow_unused=True))


def test_the_squashed_gaussian_log_prob_matches_torch_transforms():
    torch.manual_seed(4)
    mean, log_std = torch.randn(3, 2), torch.randn(3, 2) * 0.3
    low, high = torch.tensor([-0.1, -2.0]), torch.tensor([0.1, 1.0])
    ours = SquashedGaussian(mean, log_std, low, high)
    action = ours.sample_with(torch.Generator().manual_seed(0))
    assert bool(((action >= low) & (action <= high)).all())
    reference = TransformedDistribution(Independent(Normal(mean, log_std.exp()), 1),
                                        [TanhTransform(), AffineTransform((high + low) / 2, (high - low) / 2)])
    # the authors' 1e-6 inside log(1 - tanh^2) shifts the density slightly
    assert torch.allclose(ours.log_prob(action), reference.log_prob(action), atol=1e-3)
    deterministic = SquashedGaussian(mean, log_std, low, high, deterministic=True).sample_with(torch.Generator())
    assert torch.allclose(deterministic, (high + low) / 2 + (high - low) / 2 * torch.tanh(mean))


def test_a_replay_buffer_overwrites_its_oldest_transitions_and_restores_its_state():
    buffers = TaskReplayBuffers(capacity=4)
    buffers.add("a", {"rewards": torch.arange(3.0)})
    buffers.add("a", {"rewards": torch.arange(3.0, 6.0)})  # 0 and 1 are overwritten by 4 and 5
    assert buffers.size("a") == 4 and sorted(buffers.data["a"]["rewards"].tolist()) == [2.0, 3.0, 4.0, 5.0]
    drawn = buffers.sample(["a", "a"], 50, torch.Generator().manual_seed(0))["rewards"]
    assert drawn.shape == (2, 50) and set(drawn.flatten().tolist()) == {2.0, 3.0, 4.0, 5.0}
    copy = TaskReplayBuffers(capacity=4)
    copy.load(buffers.state())
    copy.add("a", {"rewards": torch.tensor([6.0])})
    buffers.add("a", {"rewards": torch.tensor([6.0])})
    assert torch.equal(copy.data["a"]["rewards"][:4], buffers.data["a"]["rewards"][:4]) and copy.fill == buffers.fill
    buffers.clear("a")
    with pytest.raises(ValueError, match="empty"):
        buffers.sample(["a"], 1, torch.Generator())


def test_a_seeded_meta_step_and_its_scores_are_reproducible_and_the_pool_cycles():
    tasks = environment_tasks("navigation2d", "train", shots=1, queries=2, seed=0, horizon=6, pool=3)
    assert tasks.task(4) == tasks.task(1)  # a fixed pool of 3 training tasks
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        learner = tiny_pearl()
        metrics = learner.meta_step(tasks.batch(0, 2))
        metrics = learner.meta_step(tasks.batch(2, 2))  # tasks 2 and 0: 0 has data already, 2 is new
        assert len(learner.rl_buffer) == 3 and all(p.grad is None for p in learner.parameters())
        # 1 initial + 1 prior + 1 extra episode for tasks 0 and 2 (6 steps each), 2 more for task 0
        assert learner.rl_buffer.size(learner.rl_buffer.keys()[0]) == 6 * 5
        runs.append((learner.state_dict(), metrics, learner.scores(tasks.batch(0, 2))))
    (first, metrics_a, scores_a), (second, metrics_b, scores_b) = runs
    assert all(torch.equal(first[k], second[k]) for k in first if k != "_extra_state")
    assert metrics_a == metrics_b
    assert set(scores_a) == {"return", "return_0", "return_1"} and scores_a["return"].shape == (2,)
    assert all(torch.equal(scores_a[k], scores_b[k]) for k in scores_a)


def test_the_posterior_episodes_of_a_step_act_with_a_posterior_z_and_the_prior_episodes_with_a_prior_one():
    # an encoder whose every factor is N(7, ~0): the posterior is z = 7 whatever the context, the prior N(0, I)
    torch.manual_seed(3)
    learner = tiny_pearl(updates_per_step=0)
    last = learner.encoder.net[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([7.0] * 3 + [-40.0] * 3))
    used: list[torch.Tensor] = []
    episode = learner._episode
    learner._episode = lambda batch, z: used.append(z.clone()) or episode(batch, z)
    tasks = environment_tasks("navigation2d", "train", shots=1, queries=1, seed=0, horizon=6, pool=3)
    learner.meta_step(tasks.batch(0, 2))  # 1 initial, 1 prior, 1 extra posterior episode
    assert len(used) == 3
    assert all((z - 7).abs().max() > 0.5 for z in used[:2])  # the prior's draws
    assert torch.allclose(used[2], torch.full((2, 3), 7.0), atol=1e-2)  # the posterior's


def test_pearl_refuses_discrete_actions_and_impossible_options():
    cls = learner_class("pearl")
    with pytest.raises(ValueError, match="Box"):
        cls(cls.Options(name="pearl"), (1,), environment=environment_family("bandit-3"))
    with pytest.raises(ValueError, match="prior_episodes"):
        tiny_pearl(prior_episodes=0, posterior_episodes=0)
