"""R2-D2 and MetaOptNet learners: their logits equal the heads computed independently."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from metalab.algorithms.metric.metaoptnet import MetaOptNet, MetaOptNetOptions
from metalab.algorithms.metric.r2d2 import R2D2, R2D2Options
from metalab.data.episodes import EpisodeSampler


def test_r2d2_logits_are_scaled_ridge_predictions(class_dataset):
    torch.manual_seed(0)
    learner = R2D2(R2D2Options(name="r2d2", ridge_lambda=0.5, scale=2.0), (1, 28, 28)).eval()
    batch = EpisodeSampler(class_dataset, ways=3, shots=2, queries=2, seed=0).batch(0, 2)
    logits = learner.predict(batch)
    with torch.no_grad():
        for t in range(2):
            x = torch.cat([learner.backbone(batch.support_x[t]), torch.ones(6, 1)], 1).double()
            q = torch.cat([learner.backbone(batch.query_x[t]), torch.ones(6, 1)], 1).double()
            y = F.one_hot(batch.support_y[t], 3).double()
            augmented_x = torch.cat([x, 0.5**0.5 * torch.eye(x.shape[1], dtype=torch.float64)])
            augmented_y = torch.cat([y, torch.zeros(x.shape[1], 3, dtype=torch.float64)])
            weights = torch.linalg.lstsq(augmented_x, augmented_y).solution
            torch.testing.assert_close(logits[t].double(), 2.0 * q @ weights, rtol=1e-3, atol=1e-4)


def test_metaoptnet_logits_use_the_svm_dual_and_train_the_backbone(class_dataset):
    torch.manual_seed(0)
    learner = MetaOptNet(MetaOptNetOptions(name="metaoptnet", svm_c=0.5), (1, 28, 28))
    batch = EpisodeSampler(class_dataset, ways=3, shots=2, queries=2, seed=0).batch(0, 2)
    metrics = learner.meta_step(batch)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in learner.parameters())
    assert float(learner.backbone.blocks[0][0].weight.grad.abs().sum()) > 0
    assert torch.isfinite(metrics["loss"])
    learner.eval()
    logits = learner.predict(batch)
    with torch.no_grad():
        support = learner.backbone(batch.support_x[0])
        query = learner.backbone(batch.query_x[0])
        # the SVM's class weights w_k = sum_i A[i, k] x_i satisfy the dual's row-sum and box constraints
        from metalab.algorithms.metric.components.heads import svm_head

        alpha = svm_head((support @ support.t()).unsqueeze(0), batch.support_y[:1], 3, c=0.5)[0]
        weights = alpha.t() @ support  # [W, D]
        torch.testing.assert_close(logits[0], learner.scale * query @ weights.t(), rtol=1e-4, atol=1e-4)
        assert torch.all(alpha <= 0.5 * F.one_hot(batch.support_y[0], 3) + 1e-6)
