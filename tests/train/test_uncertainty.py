"""The uncertainty metrics of the evaluation protocol against hand-computed values, synthetic predictors whose
calibration is known, SciPy's distributions, and the evaluator's per-episode and pooled figures."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch
from torch import Tensor
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal, StudentT

from metalab.algorithms.metric.protonet import ProtoNet, ProtoNetOptions
from metalab.algorithms.model.cnp import CNP, CNPOptions
from metalab.algorithms.model.np import NeuralProcess, NPOptions
from metalab.data.episodes import EpisodeSampler
from metalab.data.regression import regression_source
from metalab.train.distributed import episode_range
from metalab.train.evaluate import combine, evaluate
from metalab.train.uncertainty import (
    ReliabilityBins,
    central_interval,
    classification_scores,
    confidence_bins,
    expected_calibration_error,
    marginal_cdf,
    regression_scores,
)

# one episode, two classes: (probability of class 0, true label); confidences 0.9, 0.7, 0.62, 0.55, 0.91, 0.89
HAND = [(0.9, 0), (0.3, 0), (0.62, 0), (0.55, 0), (0.91, 0), (0.89, 1)]


def hand_episode() -> tuple[Tensor, Tensor]:
    p0 = torch.tensor([p for p, _ in HAND], dtype=torch.float64)
    return torch.stack([p0, 1 - p0], -1)[None], torch.tensor([[y for _, y in HAND]])


def test_bins_are_the_stated_equal_width_intervals():
    """B_m = ((m-1)/15, m/15]: an upper edge belongs to its bin, 1.0 to the last one."""
    confidence = torch.tensor([1 / 15 + 1e-9, 2 / 15 - 1e-9, 0.5, 0.999, 1.0], dtype=torch.float64)
    assert confidence_bins(confidence).tolist() == [1, 1, 7, 14, 14]


def test_ece_nll_brier_of_a_hand_computed_episode():
    probabilities, labels = hand_episode()
    # by hand: bins of the confidences 0.9 -> 13, 0.7 -> 10, 0.62 -> 9, 0.55 -> 8, 0.91 -> 13, 0.89 -> 13;
    # right: yes, no (0.3 for class 0 means class 1 predicted, label 0), yes, yes, yes, no (0.89 on class 0, label 1)
    # bin 13 holds 0.9 (right), 0.91 (right), 0.89 (wrong): |2 - 2.70| = 0.70; the others alone: |right - conf|
    ece = (abs(2 - (0.9 + 0.91 + 0.89)) + abs(0 - 0.7) + abs(1 - 0.62) + abs(1 - 0.55)) / 6
    scores = classification_scores(Categorical(probs=probabilities), labels)
    assert float(scores["ece"][0]) == pytest.approx(ece, abs=1e-12)
    assert float(expected_calibration_error(probabilities, labels)[0]) == pytest.approx(ece, abs=1e-12)
    true_probability = [0.9, 0.3, 0.62, 0.55, 0.91, 0.11]
    assert float(scores["nll"][0]) == pytest.approx(-np.mean(np.log(true_probability)), abs=1e-12)
    # two classes: (p_true - 1)^2 + (1 - p_true)^2 = 2 (1 - p_true)^2
    assert float(scores["brier"][0]) == pytest.approx(np.mean([2 * (1 - p) ** 2 for p in true_probability]))
    assert float(scores["accuracy"][0]) == pytest.approx(4 / 6)
    pooled = ReliabilityBins.of(probabilities, labels)
    assert pooled.ece() == pytest.approx(ece, abs=1e-12)
    assert pooled.count.tolist() == [0] * 8 + [1, 1, 1, 0, 0, 3, 0]
    assert ReliabilityBins.from_dict(pooled.as_dict()).ece() == pytest.approx(ece, abs=1e-12)


def test_a_calibrated_predictor_has_ece_near_zero_and_a_confidently_wrong_one_its_confidence():
    generator = torch.Generator().manual_seed(0)
    episodes, queries, ways = 50, 2000, 5
    # calibrated: the predicted class is right with exactly the probability the predictor gives it
    confidence = 0.2 + 0.8 * torch.rand(episodes, queries, generator=generator, dtype=torch.float64)
    rest = (1 - confidence) / (ways - 1)
    probabilities = rest.unsqueeze(-1).repeat(1, 1, ways)
    probabilities[..., 0] = confidence
    right = torch.rand(episodes, queries, generator=generator, dtype=torch.float64) < confidence
    labels = torch.where(right, 0, torch.randint(1, ways, (episodes, queries), generator=generator))
    scores = classification_scores(Categorical(probs=probabilities), labels)
    pooled = ReliabilityBins.of(probabilities, labels)
    assert pooled.ece() < 0.01
    assert float(scores["ece"].mean()) < 0.04  # per episode: 2000 queries, a small noise-driven bias
    # confidently wrong: 0.99 on a wrong class, always
    wrong = torch.full((episodes, queries, ways), 0.01 / (ways - 1), dtype=torch.float64)
    wrong[..., 1] = 0.99
    zeros = torch.zeros(episodes, queries, dtype=torch.long)
    scores = classification_scores(Categorical(probs=wrong), zeros)
    assert ReliabilityBins.of(wrong, zeros).ece() == pytest.approx(0.99)
    assert torch.allclose(scores["ece"], torch.tensor(0.99, dtype=torch.float64))
    assert torch.allclose(scores["nll"], torch.tensor(-math.log(0.01 / (ways - 1)), dtype=torch.float64))
    brier = 0.99**2 + (1 - 0.01 / (ways - 1)) ** 2 + (ways - 2) * (0.01 / (ways - 1)) ** 2
    assert torch.allclose(scores["brier"], torch.tensor(brier, dtype=torch.float64))
    assert float(scores["accuracy"].sum()) == 0


def test_regression_nll_and_coverage_by_hand():
    # standard normal predictive; F(0.5) = 0.69 (inside the central 50%), F(1.0) = 0.84 (inside 95% only),
    # F(-2.5) = 0.006 (outside both), F(0.1) = 0.54 (inside both)
    targets = torch.tensor([[[0.5], [1.0], [-2.5], [0.1]]], dtype=torch.float64)
    predictive = Independent(Normal(torch.zeros_like(targets), torch.ones_like(targets)), 1)
    scores = regression_scores(predictive, targets)
    assert float(scores["coverage_50"][0]) == 0.5 and float(scores["coverage_95"][0]) == 0.75
    nll = -np.mean(scipy.stats.norm.logpdf([0.5, 1.0, -2.5, 0.1]))
    assert float(scores["nll"][0]) == pytest.approx(nll, abs=1e-12)


def test_marginal_cdf_of_mixtures_and_of_a_distribution_without_a_cdf():
    y = torch.tensor([[-1.0, 0.3], [2.0, 0.0]], dtype=torch.float64)  # [Q=2, D=2]
    loc = torch.tensor([[[0.0, 1.0], [2.0, -1.0], [0.5, 0.5]]], dtype=torch.float64).expand(2, 3, 2)  # [Q, M, D]
    scale = torch.tensor([[[1.0, 0.5], [0.3, 2.0], [1.5, 1.0]]], dtype=torch.float64).expand(2, 3, 2)
    weights = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    mixture = MixtureSameFamily(Categorical(probs=weights.expand(2, 3)), Independent(Normal(loc, scale), 1))
    expected = sum(w * scipy.stats.norm.cdf(y.numpy(), loc[:, m].numpy(), scale[:, m].numpy())
                   for m, w in enumerate(weights.tolist()))
    assert np.allclose(marginal_cdf(mixture, y).numpy(), expected, atol=1e-12)
    # StudentT has no cdf in torch: the empirical CDF of the draws, within its sampling error
    student = Independent(StudentT(3.0, torch.zeros(2, 2, dtype=torch.float64), torch.ones(2, 2, dtype=torch.float64)),
                          1)
    assert np.allclose(marginal_cdf(student, y).numpy(), scipy.stats.t.cdf(y.numpy(), 3), atol=0.03)
    state = torch.random.get_rng_state()
    marginal_cdf(student, y)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global random state untouched


def test_a_calibrated_regression_predictor_covers_its_intervals():
    generator = torch.Generator().manual_seed(1)
    mean = torch.randn(20, 500, 1, generator=generator, dtype=torch.float64)
    std = 0.1 + torch.rand(20, 500, 1, generator=generator, dtype=torch.float64)
    targets = mean + std * torch.randn(20, 500, 1, generator=generator, dtype=torch.float64)
    scores = regression_scores(Independent(Normal(mean, std), 1), targets)
    assert float(scores["coverage_50"].mean()) == pytest.approx(0.5, abs=0.02)
    assert float(scores["coverage_95"].mean()) == pytest.approx(0.95, abs=0.01)
    overconfident = regression_scores(Independent(Normal(mean, std / 4), 1), targets)
    # |z| <= 1.96/4 = 0.49 for the 95% interval: 2 Phi(0.49) - 1 = 0.376
    assert float(overconfident["coverage_95"].mean()) == pytest.approx(2 * scipy.stats.norm.cdf(1.96 / 4) - 1,
                                                                       abs=0.02)


def test_evaluator_scores_a_point_estimate_classifier_from_its_softmax(class_dataset):
    torch.manual_seed(0)
    learner = ProtoNet(ProtoNetOptions(name="protonet", hidden=8), (1, 28, 28))
    episodes = EpisodeSampler(class_dataset, ways=5, shots=1, queries=3, seed=2).fixed(12)
    result = evaluate(learner, episodes, batch_size=5)
    learner.eval()
    batch = next(iter(episodes.batches(12)))
    with torch.no_grad():
        logits = learner.predict(batch).double()
    probabilities = logits.softmax(-1).numpy()
    labels = batch.query_y.numpy()
    nll = [float(torch.nn.functional.cross_entropy(logits[t], batch.query_y[t])) for t in range(12)]
    assert result.episode_metrics["nll"] == pytest.approx(nll, abs=1e-6)
    brier = [np.mean(((probabilities[t] - np.eye(5)[labels[t]]) ** 2).sum(1)) for t in range(12)]
    assert result.episode_metrics["brier"] == pytest.approx(brier, abs=1e-6)
    assert result.scores == pytest.approx((logits.argmax(-1) == batch.query_y).double().mean(1).tolist())

    def ece_by_loop(p: np.ndarray, y: np.ndarray) -> float:
        confidence, predicted = p.max(-1), p.argmax(-1)
        total = 0.0
        for m in range(15):
            inside = (confidence > m / 15) & (confidence <= (m + 1) / 15)
            if inside.any():
                gap = (predicted[inside] == y[inside]).mean() - confidence[inside].mean()
                total += inside.sum() / len(y) * abs(gap)
        return total

    assert result.episode_metrics["ece"] == pytest.approx([ece_by_loop(probabilities[t], labels[t]) for t in range(12)],
                                                          abs=1e-6)
    assert result.reliability is not None
    assert result.reliability.ece() == pytest.approx(ece_by_loop(probabilities.reshape(-1, 5), labels.reshape(-1)),
                                                     abs=1e-6)
    summary = result.as_dict()
    for name in ("nll", "ece", "brier"):
        values = result.episode_metrics[name]
        assert (summary[name], summary[f"{name}_ci95"]) == pytest.approx(
            (np.mean(values), 1.96 * np.std(values, ddof=1) / math.sqrt(12)))
    assert summary["accuracy"] == result.mean and len(summary["reliability"]["count"]) == 15
    assert "NLL" in str(result) and "ECE" in str(result) and "Brier" in str(result)
    # two consecutive shares of the episodes combine into the result of all of them (the ranks' gather)
    first = evaluate(learner, episode_range(episodes, 0, 5), 5)
    second = evaluate(learner, episode_range(episodes, 5, 12), 5)
    combined = combine([first, second])
    for name, values in result.episode_metrics.items():
        assert combined.episode_metrics[name] == pytest.approx(values)
    assert combined.reliability is not None and combined.reliability.ece() == pytest.approx(result.reliability.ece())


@pytest.mark.parametrize("cls, options", [(CNP, CNPOptions(hidden=8, representation_size=8)),
                                          (NeuralProcess, NPOptions(hidden=8, latent_size=4, eval_samples=5))])
def test_evaluator_scores_the_neural_processes_predictive(cls, options):
    torch.manual_seed(0)
    learner = cls(options, (1,))
    tasks = regression_source("sinusoid", "test", shots=5, queries=7, seed=0).fixed(6)
    result = evaluate(learner, tasks, batch_size=4)
    assert set(result.episode_metrics) == {"nll", "coverage_50", "coverage_95"}
    batch = next(iter(tasks.batches(6)))
    predictive = learner.predictive_distribution(batch)
    mean, std = learner.predictive(batch)
    assert torch.allclose(predictive.mean, mean, atol=1e-6) and torch.allclose(predictive.stddev, std, atol=1e-5)
    if cls is CNP:  # one Gaussian per point: the NLL is the negated log-likelihood the CNP reports
        assert result.episode_metrics["nll"] == pytest.approx((-learner.log_likelihood(batch)).tolist(), abs=1e-6)
    assert result.as_dict()["coverage_95"] is not None


def test_a_point_estimate_regression_learner_gets_mse_only():
    from metalab.algorithms.gradient.maml import MAML

    torch.manual_seed(0)
    learner = MAML(MAML.Options(kind="regression", backbone="mlp", mlp_hidden=[8], ways=1, inner_lr=0.01), (1,))
    assert learner.predictive_distribution(regression_source("sinusoid", "test", 5, 5, 0).batch(0, 2)) is None
    result = evaluate(learner, regression_source("sinusoid", "test", shots=5, queries=5, seed=0).fixed(4), 4)
    summary = result.as_dict()
    assert summary["mse"] == result.mean and result.episode_metrics == {}
    assert summary["nll"] is None and summary["coverage_95"] is None and "reliability" not in summary


def test_central_interval_by_bisection_on_the_cdf():
    normal = Independent(Normal(torch.tensor([[[1.0, -2.0]]], dtype=torch.float64),
                                torch.tensor([[[2.0, 0.5]]], dtype=torch.float64)), 1)
    low, high = central_interval(normal, 0.95)
    z = scipy.stats.norm.ppf(0.975)
    assert torch.allclose(low[0, 0], torch.tensor([1 - 2 * z, -2 - 0.5 * z], dtype=torch.float64), atol=1e-9)
    assert torch.allclose(high[0, 0], torch.tensor([1 + 2 * z, -2 + 0.5 * z], dtype=torch.float64), atol=1e-9)
    loc = torch.tensor([[[[0.0], [3.0]]]], dtype=torch.float64)  # [1, 1, M=2, D=1]: a two-bump mixture
    mixture = MixtureSameFamily(Categorical(probs=torch.tensor([[[0.3, 0.7]]], dtype=torch.float64)),
                                Independent(Normal(loc, torch.ones_like(loc)), 1))
    low, high = central_interval(mixture, 0.5)
    assert float(marginal_cdf(mixture, low)) == pytest.approx(0.25, abs=1e-9)
    assert float(marginal_cdf(mixture, high)) == pytest.approx(0.75, abs=1e-9)
