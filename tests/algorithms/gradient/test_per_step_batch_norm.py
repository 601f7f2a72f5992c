"""MAML++ per-step BatchNorm in a learner: inner step k uses set k and the queries set K (against the same
adaptation by hand with torch's BatchNorm holding each set), and outside ``transductive`` no query's statistics
reach the support forwards or another query's prediction."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from meta_gradients import build, image_tasks
from torch.func import functional_call

from metalab.algorithms.gradient.anil import ANIL
from metalab.algorithms.gradient.base import build_network
from metalab.algorithms.gradient.maml import MAML
from metalab.algorithms.gradient.reptile import Reptile
from metalab.data.task import Task


def per_step_learner(steps: int = 2):
    learner = build(MAML, bn_mode="per_step", inner_steps=steps, inner_lr=0.3)
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():  # distinct sets, so that using the wrong one shows
        for norm in learner.per_step_norms:
            for name in ("weight", "bias", "running_mean"):
                tensor = getattr(norm, name)
                tensor.add_(0.3 * torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype))
            norm.running_var.mul_(torch.rand(norm.running_var.shape, generator=generator, dtype=torch.float64) + 0.5)
    return learner.eval()


def by_hand(learner, batch: Task, steps: int) -> torch.Tensor:
    """SGD on each task with an ordinary network (torch BatchNorm, running estimates) holding set k at step k
    (set K = inner_steps for the queries)."""
    plain = build_network(learner.options, (1, 16, 16)).double().eval()
    norms = {name for name, module in learner.network.named_modules() if module in learner.per_step_norms}

    def at_set(params: dict, k: int) -> tuple[dict, dict]:
        chosen = {n: (v[k] if n.rpartition(".")[0] in norms else v) for n, v in params.items()}
        buffers = {n: (v[k] if n.rpartition(".")[0] in norms else v) for n, v in learner.network.named_buffers()}
        return chosen, buffers

    predictions = []
    for t in range(len(batch)):
        params = {n: p.detach().clone().requires_grad_() for n, p in learner.network.named_parameters()}
        for k in range(steps):
            out = functional_call(plain, at_set(params, min(k, learner.options.inner_steps - 1)), (batch.support_x[t],))
            grads = torch.autograd.grad(F.cross_entropy(out, batch.support_y[t]), list(params.values()))
            params = {n: (p - 0.3 * g).detach().requires_grad_() for (n, p), g in zip(params.items(), grads)}
        predictions.append(functional_call(plain, at_set(params, learner.options.inner_steps),
                                           (batch.query_x[t],)).detach())
    return torch.stack(predictions)


@pytest.mark.parametrize("steps", [2, 3])
def test_step_k_uses_set_k_and_the_queries_set_K(steps):
    """Trained with K = 2 steps (sets 0, 1, 2); evaluated with 2 steps, and with 3 (step 2 reuses set 1)."""
    learner, batch = per_step_learner(), image_tasks()
    assert torch.allclose(learner.predict(batch, steps=steps), by_hand(learner, batch, steps), atol=1e-10)


def test_meta_training_records_each_step_into_its_own_set():
    """After a meta-step, set 0 of the first BatchNorm moved toward the statistics of the support images under the
    first convolution at theta (what step 0 normalises); each of the sets 0, 1, 2 moved, each differently."""
    learner, batch = per_step_learner(), image_tasks()
    norm = learner.per_step_norms[0]
    before = norm.running_mean.clone()
    learner.train()
    learner.meta_step(batch)
    conv = learner.network.get_submodule("body.blocks.0.0")
    features = torch.stack([conv(x) for x in batch.support_x]).detach()  # [T, N, C, H, W]
    mean = features.mean((1, 3, 4)).mean(0)  # each task's mean, averaged over the tasks
    assert torch.allclose(norm.running_mean[0], 0.9 * before[0] + 0.1 * mean, atol=1e-12)
    moved = norm.running_mean - before
    assert all(float(moved[k].abs().min()) > 0 for k in range(3))
    assert not torch.allclose(moved[1], moved[0]) and not torch.allclose(moved[2], moved[1])
    assert norm.num_batches_tracked.tolist() == [1, 1, 1]


def test_warmup_replaces_the_initial_estimates_at_the_first_meta_step():
    """bn_warmup: the first meta-step sets set 0 to the support statistics themselves (momentum 1), not 10 % of
    the way from (0, 1); transductive BatchNorm refuses the option (it has no running estimates to warm up)."""
    learner, batch = build(MAML, bn_mode="per_step", inner_steps=2, inner_lr=0.3, bn_warmup=True), image_tasks()
    learner.train()
    learner.meta_step(batch)
    conv = learner.network.get_submodule("body.blocks.0.0")
    features = torch.stack([conv(x) for x in batch.support_x]).detach()  # [T, N, C, H, W]
    assert torch.allclose(learner.per_step_norms[0].running_mean[0], features.mean((1, 3, 4)).mean(0), atol=1e-12)
    with pytest.raises(ValueError, match="bn_warmup"):
        build(MAML, bn_mode="transductive", bn_warmup=True)


def with_other_queries(batch: Task) -> Task:
    """The same tasks with every query but the first replaced."""
    query_x = batch.query_x.clone()
    query_x[:, 1:] = torch.rand(query_x[:, 1:].shape, generator=torch.Generator().manual_seed(9),
                                dtype=query_x.dtype)
    return Task(batch.support_x, batch.support_y, query_x, batch.query_y)


@pytest.mark.parametrize("bn_mode", ["running", "per_step", "transductive"])
def test_no_query_statistics_reach_predictions_outside_transductive(bn_mode):
    learner, batch = build(MAML, bn_mode=bn_mode, inner_steps=2, inner_lr=0.3).eval(), image_tasks()
    other = with_other_queries(batch)
    first, again = learner.predict(batch)[:, 0], learner.predict(other)[:, 0]
    assert torch.equal(first, again) == (bn_mode != "transductive")  # transductive: the queries share statistics
    fast = learner.adapt_tasks(batch.support_x, batch.support_y, training=False)
    fast_other = learner.adapt_tasks(other.support_x, other.support_y, training=False)
    assert all(torch.equal(fast[name], fast_other[name]) for name in fast)


def test_meta_training_support_sets_never_see_the_queries():
    """Sets 0 and 1 (the support steps) move the same whatever the queries; set 2 (the queries') does not."""
    batch = image_tasks()
    moved = []
    for tasks in (batch, with_other_queries(batch)):
        learner = per_step_learner().train()
        learner.meta_step(tasks)
        moved.append(learner.per_step_norms[1].running_mean.clone())
    assert torch.equal(moved[0][:2], moved[1][:2]) and not torch.allclose(moved[0][2], moved[1][2])


@pytest.mark.parametrize("cls", [ANIL, Reptile])
def test_learners_without_per_step_support_refuse_it(cls):
    with pytest.raises(ValueError, match="bn_mode=per_step"):
        build(cls, bn_mode="per_step")
