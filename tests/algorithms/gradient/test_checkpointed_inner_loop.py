"""metalab/accel/checkpointed_unroll.py through the learners: the checkpointed second-order inner loop (one
step's graph at a time) against the unrolled one, which test_maml_vs_higher.py checks against `higher`
(float64): the same meta-gradients for Meta-SGD's learned rates, ANIL's body (reached through the support
features), running BatchNorm and minibatch steps; and what it holds after the inner loop."""
from __future__ import annotations

import gc
import weakref

import pytest
import torch
from test_gradient_learners import build, make_tasks

from metalab.accel.checkpointed_unroll import checkpointed_inner_loop
from metalab.algorithms.gradient.anil import ANIL
from metalab.algorithms.gradient.maml import MAML
from metalab.algorithms.gradient.metasgd import MetaSGD
from metalab.data.task import Task
from metalab.nn.inner_loop import SGD, InnerLoop, support_minibatches, task_loss
from metalab.nn.losses import classification_losses
from metalab.nn.reference import task_forward


def meta_gradients(learner, batch: Task) -> dict[str, torch.Tensor]:
    learner.zero_grad(set_to_none=True)
    learner.meta_step(batch)
    return {name: p.grad.clone() for name, p in learner.named_parameters()}


@pytest.mark.parametrize("cls,options", [
    (MAML, {"inner_steps": 4, "inner_lr": 0.1}),
    (MAML, {"inner_steps": 3, "inner_lr": 0.1, "bn_mode": "running"}),
    (MetaSGD, {"inner_steps": 3, "inner_lr": 0.1, "lr_init_range": [0.02, 0.2]}),
    (ANIL, {"inner_steps": 5, "inner_lr": 0.3}),
], ids=["maml", "maml-running-batchnorm", "metasgd-rates", "anil-body-through-features"])
@pytest.mark.parametrize("task_chunk", [1, 2])
def test_same_meta_gradient_as_the_unrolled_loop(cls, options, task_chunk):
    batch = make_tasks(count=3)
    unrolled = meta_gradients(build(cls, {"task_chunk": task_chunk}, **options), batch)
    checkpointed = meta_gradients(build(cls, {"task_chunk": task_chunk, "checkpoint_inner_loop": True}, **options),
                                  batch)
    assert unrolled.keys() == checkpointed.keys()
    assert max(float(grad.abs().max()) for grad in unrolled.values()) > 1e-3  # not a comparison of zeros
    if cls is MetaSGD:
        assert float(unrolled["inner_lrs.0"].abs().max()) > 0
    if cls is ANIL:  # the body's gradient comes through the support and query features
        assert float(unrolled["network.body.blocks.1.0.weight"].abs().max()) > 0
    for name, grad in unrolled.items():
        error = float((checkpointed[name] - grad).abs().max())
        assert error <= 1e-12, f"{name}: checkpointed meta-gradient differs by {error:.3g}"


def test_minibatch_steps_replay_the_same_examples():
    """With a minibatch per step, the recomputation uses the step's own examples."""
    learner, batch = build(MAML), make_tasks(count=3, shots=3)
    params = dict(learner.network.named_parameters())
    indices = support_minibatches(3, batch.support_x.shape[1], 4, 4, torch.Generator().manual_seed(1))
    results = []
    for checkpointed in (False, True):
        loop = InnerLoop(steps=4, rule=SGD(0.1))
        fast = loop.adapt(lambda p, x: task_forward(learner.network, p, x, list(params)), params, list(params),
                          batch.support_x, batch.support_y, task_loss(classification_losses), indices=indices,
                          unroll=checkpointed_inner_loop if checkpointed else None)
        loss = sum((value * value).sum() for name, value in fast.items())
        results.append((torch.autograd.grad(loss, list(params.values())), fast))
    (plain, plain_fast), (ours, ours_fast) = results
    for name in params:
        assert torch.equal(plain_fast[name], ours_fast[name])
    assert max(float((a - b).abs().max()) for a, b in zip(plain, ours)) <= 1e-12


def held_bytes(learner, batch: Task) -> tuple[int, dict]:
    """Bytes of the tensors saved for the meta-backward that are still alive after the inner loop."""
    saved: list[weakref.ref] = []

    def pack(tensor):
        saved.append(weakref.ref(tensor))
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        fast = learner.adapt_tasks(batch.support_x, batch.support_y, training=True)
    gc.collect()
    storages = {}
    for ref in saved:
        tensor = ref()
        if tensor is not None:
            storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
    return sum(storages.values()), fast


def test_holds_one_step_graph_after_the_inner_loop():
    batch = make_tasks(count=2, shots=5)
    one_step, _ = held_bytes(build(MAML, {"task_chunk": 0}, inner_steps=1, inner_lr=0.1), batch)
    five_steps, _ = held_bytes(build(MAML, {"task_chunk": 0}, inner_steps=5, inner_lr=0.1), batch)
    learner = build(MAML, {"task_chunk": 0, "checkpoint_inner_loop": True}, inner_steps=5, inner_lr=0.1)
    checkpointed, fast = held_bytes(learner, batch)
    # the unrolled loop keeps 5 steps' graphs; the checkpointed one the last step's (the starting points of the
    # other steps live outside autograd's saved tensors: 4 x 2 tasks x the parameters)
    assert checkpointed <= 1.01 * one_step
    assert five_steps > 4 * checkpointed
    assert all(value.grad_fn is not None for value in fast.values() if value.dim() > 0 and value.shape[0] == 2)


def test_first_order_reptile_with_its_inner_adam_has_nothing_to_checkpoint():
    from metalab.algorithms.gradient.reptile import Reptile

    learner, batch = build(Reptile, {"checkpoint_inner_loop": True}, inner_steps=2), make_tasks()
    learner.meta_step(batch)  # first order: nothing to checkpoint, so nothing refused
    assert all(p.grad is not None for p in learner.network.parameters())


def test_clipped_inner_gradients_give_the_same_meta_gradient():
    """learner.inner_grad_clip: the recomputed steps clip as the unrolled ones do (the factor is in both graphs)."""
    batch = make_tasks(count=3)
    options = {"inner_steps": 3, "inner_lr": 0.1}
    free = meta_gradients(build(MAML, **options), batch)
    unrolled = meta_gradients(build(MAML, inner_grad_clip=0.05, **options), batch)
    checkpointed = meta_gradients(build(MAML, {"checkpoint_inner_loop": True}, inner_grad_clip=0.05, **options), batch)
    assert max(float((unrolled[name] - grad).abs().max()) for name, grad in free.items()) > 1e-4  # the clip acts
    for name, grad in unrolled.items():
        error = float((checkpointed[name] - grad).abs().max())
        assert error <= 1e-12, f"{name}: checkpointed meta-gradient differs by {error:.3g}"
