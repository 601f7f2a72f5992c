"""CMAML's per-task pruning: each task gets its own mask of the private module, the shared module is never
pruned, pruned connections stay at zero through the inner loop, and without pruning it is MAML (float64)."""
from __future__ import annotations

import torch

from metalab.algorithms.gradient.cmaml import CMAML, keep_largest
from metalab.algorithms.gradient.maml import MAML
from metalab.data.mixtures import MixedRegressionTasks

OPTIONS = dict(kind="regression", backbone="mlp", mlp_hidden=[8, 8], ways=1, inner_lr=0.05, private_hidden=6)


def build(**options) -> CMAML:
    torch.manual_seed(0)
    return CMAML(CMAML.Options(**{**OPTIONS, **options}), (1,)).double()


def batch(count: int = 3):
    return MixedRegressionTasks("train", shots=5, queries=5, seed=2).batch(0, count).to("cpu", torch.float64)


def test_each_task_has_its_own_private_mask_and_pruned_weights_stay_zero():
    learner, tasks = build(inner_steps=3, prune_rate=0.5), batch()
    fast = learner.adapt_tasks(tasks.support_x, tasks.support_y, training=False)
    masks = dict(learner.masks)
    assert set(masks) == {"private.0.weight", "private.2.weight"}  # the private matrices, nothing shared
    first = masks["private.0.weight"]
    assert any(not torch.equal(first[0], first[t]) for t in (1, 2))  # not one mask for all
    for name, mask in masks.items():
        assert mask.shape == (3, *learner.network.get_parameter(name).shape)
        assert torch.equal(mask.flatten(1).sum(1), torch.full((3,), mask[0].numel() // 2, dtype=mask.dtype))
        assert (fast[name][mask == 0] == 0).all()  # cut at step 1, still zero after steps 2 and 3
        assert (fast[name][mask == 1] != 0).all()
    for t in range(3):  # a task's mask is its own: the same when it is adapted alone
        learner.adapt_tasks(tasks.support_x[t : t + 1], tasks.support_y[t : t + 1], training=False)
        for name, mask in masks.items():
            assert torch.equal(learner.masks[name][0], mask[t])


def test_the_shared_module_is_not_pruned():
    tasks = batch()
    pruned, full = build(inner_steps=1, prune_rate=0.5), build(inner_steps=1, prune_rate=0.0)
    a = pruned.adapt_tasks(tasks.support_x, tasks.support_y, training=False)
    b = full.adapt_tasks(tasks.support_x, tasks.support_y, training=False)
    for name in a:
        if not name.startswith("private."):  # one step: the shared weights move as without pruning
            torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)
    assert not torch.equal(a["private.0.weight"], b["private.0.weight"])


def test_without_pruning_it_is_maml_on_the_same_network():
    tasks = batch()
    learner = build(inner_steps=2, prune_rate=0.0)
    maml = MAML(MAML.Options(**{k: v for k, v in OPTIONS.items() if k != "private_hidden"}, inner_steps=2), (1,))
    maml.network = learner.network
    learner.meta_step(tasks)
    expected = {name: p.grad.clone() for name, p in learner.network.named_parameters()}
    learner.zero_grad()
    maml.meta_step(tasks)
    for name, p in learner.network.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], rtol=1e-12, atol=1e-14)


def test_keep_largest_keeps_exactly_the_share_with_ties():
    scores = torch.tensor([[0.0, 0.0, 0.0, 5.0], [1.0, 2.0, 3.0, 4.0]])
    assert keep_largest(scores, 0.5).sum(1).tolist() == [2.0, 2.0]
    assert keep_largest(scores, 0.5)[1].tolist() == [0.0, 0.0, 1.0, 1.0]
