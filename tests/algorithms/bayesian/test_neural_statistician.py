"""The Neural Statistician's bound and classifier against closed forms: Gaussian KL divergences and the Bernoulli
log-likelihood written out by hand, the statistic network's invariance to the order of a set, and a query that
is its class's only support image."""
from __future__ import annotations

import math

import pytest
import torch

from metalab.algorithms.bayesian.neural_statistician import NeuralStatistician, NeuralStatisticianOptions
from metalab.algorithms.model.components.processes import gaussian
from metalab.data.task import Task


def gaussian_kl(mu1, std1, mu2, std2) -> torch.Tensor:
    """KL(N(mu1, std1^2) || N(mu2, std2^2)) summed over the last dimension, written out."""
    return (torch.log(std2 / std1) + (std1**2 + (mu1 - mu2) ** 2) / (2 * std2**2) - 0.5).sum(-1)


def build(seed: int = 0) -> NeuralStatistician:
    torch.manual_seed(seed)
    options = NeuralStatisticianOptions(hidden=4, context_size=3, latent_size=2, width=8)
    return NeuralStatistician(options, (1, 16, 16)).double()


def images(tasks: int, count: int, seed: int) -> torch.Tensor:
    return torch.rand(tasks, count, 1, 16, 16, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_elbo_terms_are_the_closed_forms():
    learner = build()
    x, labels = images(2, 6, 1), torch.tensor([[0, 1, 2, 0, 1, 2], [2, 2, 0, 1, 0, 1]])
    torch.manual_seed(5)
    terms = learner.elbo_terms(x, labels, 3)
    # again by hand, with the same two draws (c, then z) from the same seed
    torch.manual_seed(5)
    embeddings = learner.encoder(x.flatten(0, 1)).unflatten(0, (2, 6))
    pooled = torch.stack([torch.stack([learner.pre_pool(embeddings[t, labels[t] == k]).mean(0) for k in range(3)])
                          for t in range(2)])
    contexts = gaussian(learner.post_pool(pooled), 0.01)
    c = contexts.rsample()
    kl_c = gaussian_kl(contexts.loc, contexts.scale, torch.zeros_like(c), torch.ones_like(c)).sum(1)
    assert torch.allclose(terms["kl_c"], kl_c, atol=1e-12)
    c_x = torch.stack([c[t, labels[t]] for t in range(2)])
    q_z = gaussian(learner.posterior_z(torch.cat([embeddings, c_x], -1)), 0.01)
    p_z = gaussian(learner.prior_z(c_x), 0.01)
    z = q_z.rsample()
    assert torch.allclose(terms["kl_z"], gaussian_kl(q_z.loc, q_z.scale, p_z.loc, p_z.scale).sum(1), atol=1e-12)
    probability = torch.sigmoid(learner.decoder(torch.cat([z, c_x], -1)))
    pixels = x.flatten(2)
    log_likelihood = (pixels * probability.log() + (1 - pixels) * (1 - probability).log()).sum(-1).sum(1)
    assert torch.allclose(terms["reconstruction"], log_likelihood, atol=1e-9)
    assert terms["examples"].tolist() == [6, 6]


def test_a_missing_class_has_no_context_term():
    learner = build()
    x, labels = images(1, 4, 2), torch.tensor([[0, 0, 2, 2]])  # class 1 absent
    torch.manual_seed(0)
    three = learner.elbo_terms(x, labels, 3)["kl_c"]
    torch.manual_seed(0)
    contexts = learner.class_contexts(learner.encoder(x[0]).unsqueeze(0), labels, 3)
    expected = gaussian_kl(contexts.loc, contexts.scale, torch.zeros(1, 3, 3), torch.ones(1, 3, 3))[0, [0, 2]].sum()
    assert torch.allclose(three[0], expected, atol=1e-12)


def test_logits_are_minus_the_kl_between_context_posteriors_and_order_free():
    learner = build(1).eval()  # BatchNorm with running statistics: an image's embedding is its own
    support, query = images(2, 6, 3), images(2, 4, 4)
    support_y = torch.tensor([[0, 1, 2, 0, 1, 2], [0, 0, 1, 1, 2, 2]])
    batch = Task(support, support_y, query, torch.zeros(2, 4, dtype=torch.long))
    logits = learner.predict(batch)
    with torch.no_grad():
        for t in range(2):
            for k in range(3):
                members = learner.pre_pool(learner.encoder(support[t, support_y[t] == k])).mean(0)
                cls = gaussian(learner.post_pool(members), 0.01)
                for q in range(4):
                    alone = gaussian(learner.post_pool(learner.pre_pool(learner.encoder(query[t, q:q + 1])))[0], 0.01)
                    assert float(logits[t, q, k]) == pytest.approx(
                        -float(gaussian_kl(alone.loc, alone.scale, cls.loc, cls.scale)), abs=1e-10)
    order = torch.randperm(6)
    shuffled = Task(support[:, order], support_y[:, order], query, batch.query_y)
    assert torch.allclose(learner.predict(shuffled), logits, atol=1e-12)
    probabilities = learner.predictive_distribution(batch).probs
    assert torch.allclose(probabilities, logits.softmax(-1))


def test_a_query_that_is_its_class_only_example_is_certain_of_it():
    """KL(q(c | x) || q(c | {x})) = 0 and every KL is >= 0: the query's own class has the largest logit, 0."""
    learner = build(2).eval()
    support = images(1, 3, 5)
    batch = Task(support, torch.tensor([[0, 1, 2]]), support[:, [2, 0]], torch.tensor([[2, 0]]))
    logits = learner.predict(batch)
    assert logits[0, 0, 2] == pytest.approx(0, abs=1e-12) and logits[0, 1, 0] == pytest.approx(0, abs=1e-12)
    assert logits.argmax(-1).tolist() == [[2, 0]] and bool((logits <= 1e-12).all())


def test_meta_step_trains_every_network_on_the_bound():
    learner = build(3).float()
    batch = Task(images(2, 3, 6).float(), torch.tensor([[0, 1, 2]] * 2), images(2, 6, 7).float(),
                 torch.tensor([[0, 1, 2, 0, 1, 2]] * 2))
    metrics = learner.meta_step(batch)
    assert set(metrics) == {"loss", "accuracy", "kl_z", "kl_c"} and math.isfinite(float(metrics["loss"]))
    assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for n, p in learner.named_parameters()
               if not n.endswith("bias") or "blocks" not in n)


def test_bad_sizes_name_the_options():
    with pytest.raises(ValueError, match="learner.context_size"):
        NeuralStatistician(NeuralStatisticianOptions(hidden=4, context_size=0), (1, 16, 16))
