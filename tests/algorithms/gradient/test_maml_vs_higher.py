"""MAML's meta-gradient equals the one `higher` computes (unrolled autograd through a patched copy
of the same nn.Module) on Conv-4 with the same weights and tasks, in float64, for every execution
path: inner loop and query pass folded over the tasks or task by task, checkpointed, channels-last,
first convolution + BatchNorm folded (in slices of images) or not, max-pooling through metalab's
index-only function, and the reference path."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from metalab.accel import batch_norm_relu_pool, folded, pooling
from metalab.algorithms.gradient.maml import MAML
from metalab.data.task import Task
from metalab.nn.execution import SpeedOptions

higher = pytest.importorskip("higher")

WAYS, SHOTS, QUERIES, TASKS, SIZE = 3, 1, 2, 2, 16
TOLERANCE = 1e-10


def make_tasks(seed: int = 0, tasks: int = TASKS) -> Task:
    generator = torch.Generator().manual_seed(seed)
    support_x = torch.rand(tasks, WAYS * SHOTS, 1, SIZE, SIZE, generator=generator, dtype=torch.float64)
    query_x = torch.rand(tasks, WAYS * QUERIES, 1, SIZE, SIZE, generator=generator, dtype=torch.float64)
    support_y = torch.arange(WAYS).repeat_interleave(SHOTS).expand(tasks, -1)
    query_y = torch.arange(WAYS).repeat_interleave(QUERIES).expand(tasks, -1)
    return Task(support_x, support_y, query_x, query_y)


def make_maml(speed: dict | None = None, **options) -> MAML:
    torch.manual_seed(0)
    learner = MAML(MAML.Options(name="maml", ways=WAYS, hidden=8, **options), (1, SIZE, SIZE),
                   SpeedOptions(**(speed or {})))
    return learner.double()


def higher_meta_gradient(learner: MAML, batch: Task, steps: int, lr: float, first_order: bool) -> list[torch.Tensor]:
    """Meta-gradient by `higher`: differentiable SGD on a functional copy of the module, task by task."""
    network = learner.network
    params = list(network.parameters())
    total = [torch.zeros_like(p) for p in params]
    for t in range(len(batch)):
        inner_opt = torch.optim.SGD(network.parameters(), lr=lr)
        with higher.innerloop_ctx(network, inner_opt, copy_initial_weights=False,
                                  track_higher_grads=not first_order) as (fnet, diffopt):
            for _ in range(steps):
                diffopt.step(F.cross_entropy(fnet(batch.support_x[t]), batch.support_y[t]))
            query_loss = F.cross_entropy(fnet(batch.query_x[t]), batch.query_y[t]) / len(batch)
            wrt = fnet.parameters() if first_order else params  # first order: the gradient at the adapted weights
            grads = torch.autograd.grad(query_loss, list(wrt))
        total = [a + g for a, g in zip(total, grads)]
    return total


def metalab_meta_gradient(learner: MAML, batch: Task) -> list[torch.Tensor]:
    learner.zero_grad(set_to_none=True)
    learner.meta_step(batch)
    return [p.grad.clone() for p in learner.network.parameters()]


PATHS = {
    "the reference path (plain PyTorch, torch.func)": {"engine": "reference"},
    "default: inner loop NCHW (slices of tasks by the support-size rule), query pass channels-last": {},
    "task by task": {"task_chunk": 1},
    "query pass folded over the tasks": {"query_chunk": TASKS},
    "inner loop folded over all tasks": {"task_chunk": 0},
    "everything folded": {"task_chunk": 0, "query_chunk": TASKS},
    "NCHW throughout": {"channels_last": False},
    "inner loop channels-last too": {"inner_channels_last": None},
    "checkpointed": {"checkpoint": True},
    "inner loop checkpointed (one step's graph at a time)": {"checkpoint_inner_loop": True},
    "inner loop checkpointed, task by task": {"checkpoint_inner_loop": True, "task_chunk": 1},
    "first conv + BatchNorm unfolded": {"fold_conv_norm": False},
    "without the compiled kernels": {"native_kernels": False},
}


@pytest.mark.parametrize("steps,first_order", [(1, False), (5, False), (5, True)],
                         ids=["second-order-1-step", "second-order-5-steps", "first-order-5-steps"])
def test_meta_gradient_equals_higher_on_every_path(steps, first_order, monkeypatch):
    batch = make_tasks()
    lr = 0.4 if steps == 1 else 0.1
    reference = higher_meta_gradient(make_maml(), batch, steps, lr, first_order)
    # every max-pool through metalab's index-only function, and the folded first block one image at a
    # time (the defaults do so only for large inputs)
    monkeypatch.setattr(pooling, "MIN_BYTES", 0)
    monkeypatch.setattr(folded, "SLICE_BYTES", 1)
    # and the compiled BatchNorm + ReLU + max-pool kernel on every map it may take (query passes, first order)
    monkeypatch.setattr(batch_norm_relu_pool, "MIN_BYTES", 0)
    for path, options in PATHS.items():
        learner = make_maml(options, inner_steps=steps, inner_lr=lr, first_order=first_order)
        ours = metalab_meta_gradient(learner, batch)
        error = max(float((a - b).abs().max()) for a, b in zip(ours, reference))
        assert error <= TOLERANCE, f"{path}: meta-gradient differs from higher's by {error:.3g}"
        scale = max(float(g.abs().max()) for g in reference)
        assert scale > 1e-3  # the comparison is not between two zeros


def test_inner_loop_in_slices_of_tasks_equals_higher():
    """3 tasks in slices of 2 (a grouped slice and a lone task): second order, 5 steps."""
    batch = make_tasks(tasks=3)
    reference = higher_meta_gradient(make_maml(), batch, 5, 0.1, False)
    ours = metalab_meta_gradient(make_maml({"task_chunk": 2}, inner_steps=5, inner_lr=0.1), batch)
    error = max(float((a - b).abs().max()) for a, b in zip(ours, reference))
    assert error <= TOLERANCE, f"slices of 2 tasks: meta-gradient differs from higher's by {error:.3g}"
