"""The evaluation protocol: CI formula against SciPy, fixed episodes, per-episode accuracy."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch

from metalab.algorithms.metric.protonet import ProtoNet, ProtoNetOptions
from metalab.data.episodes import EpisodeSampler
from metalab.train.evaluate import evaluate, mean_ci95


def test_ci95_matches_scipy():
    scores = np.random.default_rng(0).uniform(0.5, 1.0, size=600)
    mean, ci95 = mean_ci95(scores.tolist())
    assert mean == pytest.approx(scores.mean(), abs=1e-12)
    assert ci95 == pytest.approx(1.96 * scipy.stats.sem(scores), rel=1e-12)
    low, high = scipy.stats.norm.interval(0.95, loc=scores.mean(), scale=scipy.stats.sem(scores))
    assert ci95 == pytest.approx((high - low) / 2, rel=1e-3)  # 1.96 vs the exact 1.95996 quantile


def test_evaluate_scores_each_fixed_episode(class_dataset):
    torch.manual_seed(0)
    learner = ProtoNet(ProtoNetOptions(name="protonet"), (1, 28, 28))
    episodes = EpisodeSampler(class_dataset, ways=5, shots=1, queries=3, seed=2).fixed(30)
    result = evaluate(learner, episodes, batch_size=7)
    assert result.episodes == 30 and result.ways == 5 and result.shots == 1 and result.queries == 3
    assert learner.training  # mode restored
    learner.eval()
    expected = []
    for batch in episodes.batches(30):
        expected = (learner.predict(batch).argmax(-1) == batch.query_y).double().mean(1)
    assert result.scores == pytest.approx(expected.tolist())
    assert result.mean == pytest.approx(float(expected.mean()))
    assert result.ci95 == pytest.approx(1.96 * float(expected.std()) / math.sqrt(30))
    again = evaluate(learner, episodes, batch_size=30)
    assert again.scores == result.scores
    summary = again.as_dict()
    assert {"accuracy", "ci95", "episodes", "ways", "shots", "queries", "seed"} <= set(summary)
