"""Baseline / Baseline++: global-class pre-training and an optimal logistic-regression head."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.optimize
import torch
import torch.nn.functional as F

from metalab.algorithms.metric.baseline import Baseline, BaselineOptions
from metalab.algorithms.metric.baselinepp import BaselinePP, BaselinePPOptions
from metalab.algorithms.metric.components.heads import logistic_objective, logistic_regression_head
from metalab.data.episodes import EpisodeSampler
from metalab.data.task import Task


def test_logistic_head_is_the_optimum_found_by_scipy():
    generator = torch.Generator().manual_seed(0)
    support = torch.randn(2, 9, 4, generator=generator, dtype=torch.float64)
    labels = torch.tensor([[0, 0, 0, 1, 1, 1, 2, 2, 2], [2, 1, 0, 2, 1, 0, 2, 1, 0]])
    weights, biases = logistic_regression_head(support, labels, 3, c=0.7, max_iter=200, tol=1e-9)
    for t in range(2):
        x, y = support[t].numpy(), labels[t].numpy()

        def objective(theta, x=x, y=y):
            w, b = theta[:12].reshape(4, 3), theta[12:]
            logits = x @ w + b
            logits = logits - logits.max(1, keepdims=True)
            log_probabilities = logits - np.log(np.exp(logits).sum(1, keepdims=True))
            return -log_probabilities[np.arange(9), y].sum() + (w**2).sum() / (2 * 0.7)

        reference = scipy.optimize.minimize(objective, np.zeros(15), method="BFGS", options={"gtol": 1e-10}).x
        np.testing.assert_allclose(weights[t].numpy().ravel(), reference[:12], atol=1e-4)
        np.testing.assert_allclose(biases[t].numpy(), reference[12:], atol=1e-4)
    # and the gradient of the objective vanishes there (each task's L-BFGS stops once its objective changes by
    # less than 1e-12, where the gradient is ~1e-6)
    w, b = weights.clone().requires_grad_(True), biases.clone().requires_grad_(True)
    logistic_objective(support, labels, w, b, 0.7).sum().backward()
    assert float(w.grad.abs().max()) < 1e-5 and float(b.grad.abs().max()) < 1e-5


def test_pretraining_classifies_images_into_their_global_classes(class_dataset):
    torch.manual_seed(0)
    learner = Baseline(BaselineOptions(name="baseline", num_classes=12), (1, 28, 28))
    batch = EpisodeSampler(class_dataset, ways=4, shots=1, queries=2, seed=0).batch(0, 2)
    metrics = learner.meta_step(batch)
    images = torch.cat([batch.support_x, batch.query_x], 1).flatten(0, 1)
    labels = torch.cat([batch.classes.gather(1, batch.support_y), batch.classes.gather(1, batch.query_y)], 1).flatten()
    with torch.no_grad():
        expected = F.cross_entropy(learner.classifier(learner.backbone(images)), labels)
    torch.testing.assert_close(metrics["loss"], expected)


def test_clear_errors_without_global_classes_or_with_too_few(class_dataset):
    batch = EpisodeSampler(class_dataset, ways=4, shots=1, queries=2, seed=0).batch(0, 1)
    small = Baseline(BaselineOptions(name="baseline", num_classes=5), (1, 28, 28))
    with pytest.raises(ValueError, match="num_classes"):
        small.meta_step(Task(batch.support_x, batch.support_y, batch.query_x, batch.query_y,
                             torch.tensor([[0, 1, 2, 9]])))
    with pytest.raises(ValueError, match="batch.classes is None"):
        small.meta_step(Task(batch.support_x, batch.support_y, batch.query_x, batch.query_y))


def test_baselinepp_uses_a_cosine_classifier_and_predicts_with_the_logistic_head(class_dataset):
    torch.manual_seed(0)
    learner = BaselinePP(BaselinePPOptions(name="baselinepp", num_classes=12, cosine_scale=5.0), (1, 28, 28)).eval()
    features = torch.randn(3, 64)
    logits = learner.classifier(features)
    expected = 5.0 * F.cosine_similarity(features.unsqueeze(1), learner.classifier.weight.unsqueeze(0), dim=-1)
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)
    batch = EpisodeSampler(class_dataset, ways=3, shots=2, queries=2, seed=3).batch(0, 2)
    batched = learner.predict(batch)
    for t in range(2):
        torch.testing.assert_close(learner.adapt(batch.support_x[t], batch.support_y[t])(batch.query_x[t]),
                                   batched[t], rtol=1e-3, atol=1e-3)
