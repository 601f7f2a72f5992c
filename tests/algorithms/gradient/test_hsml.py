"""HSML against MAML and finite differences (float64).

What reduces, exactly: with one cluster per level every soft assignment is 1, and HSML is MAML started from
theta (.) gate_t. So the meta-gradient HSML leaves on theta is (1/T) sum_t gate_t (.) G_t, with G_t MAML's
meta-gradient for task t alone at the weights theta (.) gate_t; with the gate forced to 1 it is MAML's own.
"""
from __future__ import annotations

import copy

import pytest
import torch

from metalab.algorithms.gradient.hsml import HSML
from metalab.algorithms.gradient.maml import MAML
from metalab.data.mixtures import MixedRegressionTasks
from metalab.data.task import Task
from metalab.train.trainer import Trainer

OPTIONS = dict(kind="regression", backbone="mlp", mlp_hidden=[8, 8], ways=1, inner_steps=2, inner_lr=0.05)


def tasks(count: int = 2) -> Task:
    batch = MixedRegressionTasks("train", shots=5, queries=6, seed=1).batch(0, count)
    return batch.to("cpu", torch.float64)


def hsml(**options) -> HSML:
    torch.manual_seed(0)
    return HSML(HSML.Options(**OPTIONS, task_dim=6, **options), (1,)).double()


def maml_gradient(weights: dict[str, torch.Tensor], batch: Task) -> dict[str, torch.Tensor]:
    maml = MAML(MAML.Options(**OPTIONS), (1,)).double()
    maml.network.load_state_dict(weights)
    maml.meta_step(batch)
    return {name: p.grad for name, p in maml.network.named_parameters()}


@pytest.mark.parametrize("aggregator", ["gru", "mean"])
def test_one_cluster_is_maml_from_the_gated_start(aggregator):
    learner, batch = hsml(clusters=[1], aggregator=aggregator), tasks()
    with torch.no_grad():
        start = {name: value.detach() for name, value in learner.task_start(batch.support_x, batch.support_y,
                                                                             True).items()}
    theta = {name: p.detach().clone() for name, p in learner.network.named_parameters()}
    gates = {name: start[name] / theta[name] for name in theta}
    assert all(((g > 0) & (g < 1)).all() for g in gates.values())  # a sigmoid gate, not 1
    learner.meta_step(batch)
    expected = {name: torch.zeros_like(value) for name, value in theta.items()}
    for t in range(len(batch)):
        grads = maml_gradient({name: start[name][t] for name in theta}, batch[t: t + 1])
        for name in theta:
            expected[name] += gates[name][t] * grads[name] / len(batch)
    for name, p in learner.network.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], rtol=1e-10, atol=1e-12)


def test_gate_forced_to_one_gives_mamls_meta_gradient():
    learner, batch = hsml(clusters=[1]), tasks(3)
    with torch.no_grad():
        for gate in learner.gates.values():
            gate.weight.zero_()
            gate.bias.fill_(40.0)  # sigmoid(40) rounds to 1 in float64
    learner.meta_step(batch)
    expected = maml_gradient(copy.deepcopy(learner.network.state_dict()), batch)
    for name, p in learner.network.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], rtol=1e-12, atol=1e-14)


def test_assignments_are_distributions_at_every_level():
    learner = hsml(clusters=[4, 3])
    h = torch.randn(5, 2, 6, dtype=torch.float64)
    for level, clusters in enumerate([4, 3, 1]):
        p = learner.assignments(h, level)
        assert p.shape == (5, 2, clusters) and (p >= 0).all()
        torch.testing.assert_close(p.sum(-1), torch.ones(5, 2, dtype=torch.float64))


def test_the_meta_gradient_reaches_the_centres_and_matches_finite_differences():
    learner, batch = hsml(clusters=[3, 2]), tasks()
    learner.meta_step(batch)
    analytic_all = [learner.centres[0].grad[1, 2].item(), learner.centres[1].grad[0, 4].item()]
    for level, (row, column) in ((0, (1, 2)), (1, (0, 4))):
        centre, analytic = learner.centres[level], analytic_all[level]

        def loss(shift: float, centre=centre, row=row, column=column) -> float:
            with torch.no_grad():
                centre[row, column] += shift
            value = learner.meta_step(batch)["loss"].item()  # the query loss: the only term the centres enter
            with torch.no_grad():
                centre[row, column] -= shift
            return value

        eps = 1e-6
        numeric = (loss(eps) - loss(-eps)) / (2 * eps)
        assert abs(analytic) > 1e-8, level
        assert analytic == pytest.approx(numeric, rel=1e-5, abs=1e-10), level


def test_trains_and_evaluates_from_its_recipe(tmp_path):
    overrides = ["train.steps=2", "train.val_every=0", "eval.episodes=8", "task.meta_batch=2",
                 "learner.mlp_hidden=[8,8]", "learner.task_dim=6", f"run.dir={tmp_path}", "train.progress=false",
                 "run.tensorboard=false"]
    from metalab.config import load_recipe

    results = Trainer(load_recipe("hetero-regression-hsml-5shot", overrides)).fit()
    assert results["test"]["episodes"] == 8 and results["test"]["mse"] > 0
