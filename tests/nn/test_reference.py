"""The reference task_forward against the unmodified module run task by task on copies of itself, its
BatchNorm semantics (statistics of the set given, or running estimates; buffers untouched) and the
statistics it records against the running estimates torch's own BatchNorm would reach."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from metalab.nn.backbones import MLP, Conv4
from metalab.nn.batch_norm import update_running_statistics
from metalab.nn.reference import task_forward
from networks import smooth_network, tasks

TASKS = 3


def networks() -> dict[str, tuple[nn.Module, torch.Tensor]]:
    torch.manual_seed(1)
    return {
        "conv4": (nn.Sequential(Conv4(1, 8), nn.Linear(8, 5)), torch.randn(TASKS, 4, 1, 16, 16)),
        "smooth": (smooth_network(), torch.randn(TASKS, 4, 1, 8, 8)),
        "mlp-batchnorm": (nn.Sequential(MLP(1, [6, 6]), nn.BatchNorm1d(6), nn.Linear(6, 1)), torch.randn(TASKS, 5, 1)),
        "mlp": (MLP(1, [6, 6], 1), torch.randn(TASKS, 5, 1)),
    }


def by_hand(module: nn.Module, per_task: dict[str, torch.Tensor], x: torch.Tensor, training: bool) -> torch.Tensor:
    """Each task on its own deep copy of the module, its parameters loaded: the module's own forward."""
    outputs = []
    for t in range(x.shape[0]):
        copied = copy.deepcopy(module).train(training)
        copied.load_state_dict({**copied.state_dict(), **{n: v[t] for n, v in per_task.items()}})
        outputs.append(copied(x[t]))
    return torch.stack(outputs)


@pytest.mark.parametrize("network", ["conv4", "smooth", "mlp-batchnorm", "mlp"])
def test_task_forward_equals_the_module_run_task_by_task(network):
    module, x = networks()[network]
    per_task = {n: p.detach() + 0.1 * torch.randn(TASKS, *p.shape) for n, p in module.named_parameters()}
    buffers = {n: b.clone() for n, b in module.named_buffers()}
    ours = task_forward(module, per_task, x, per_task)
    assert torch.allclose(ours, by_hand(module, per_task, x, training=True), atol=1e-12)
    assert all(torch.equal(b, buffers[n]) for n, b in module.named_buffers())  # batch statistics: buffers untouched
    for layer in module.modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            layer.running_mean.uniform_(-1, 1), layer.running_var.uniform_(0.5, 2)
            buffers = {n: b.clone() for n, b in module.named_buffers()}
    ours = task_forward(module, per_task, x, per_task, statistics="running")
    assert torch.allclose(ours, by_hand(module, per_task, x, training=False), atol=1e-12)
    assert all(torch.equal(b, buffers[n]) for n, b in module.named_buffers())  # running estimates untouched
    assert module.training  # the module's mode is restored


def test_shared_and_per_task_parameters_mix():
    module, x = networks()["conv4"]
    params = dict(module.named_parameters())
    head = {"1.weight": params["1.weight"].detach() + torch.randn(TASKS, 5, 8)}
    ours = task_forward(module, {**params, **head}, x, head)
    expected = by_hand(module, {"1.weight": head["1.weight"]}, x, training=True)
    assert torch.allclose(ours, expected, atol=1e-12)


def test_query_statistics_never_reach_support_predictions():
    """Batch statistics are those of the set given; running estimates make each prediction its input's alone."""
    module = smooth_network()
    params = dict(module.named_parameters())
    x, _ = tasks(1, 3, 2)
    for statistics in ("batch", "running"):
        alone = task_forward(module, params, x[:, :3], statistics=statistics)
        with_others = task_forward(module, params, x, statistics=statistics)
        changed = task_forward(module, params, torch.cat([x[:, :3], 5 + x[:, 3:]], 1), statistics=statistics)
        if statistics == "running":
            assert torch.allclose(alone, with_others[:, :3]) and torch.allclose(alone, changed[:, :3])
        else:
            assert not torch.allclose(with_others[:, :3], changed[:, :3])


def test_recorded_statistics_move_running_estimates_as_torch_batch_norm_would():
    """One task: update_running_statistics(record) = what BatchNorm2d's own training forward does."""
    module = smooth_network()
    x, _ = tasks(1, 3, 4)
    record = {}
    task_forward(module, dict(module.named_parameters()), x, record=record)
    assert set(record) == {"1.", "5."}
    expected = copy.deepcopy(module).train()
    expected(x[0])
    update_running_statistics(module, record)
    for ours, theirs in zip(module.buffers(), expected.buffers()):
        assert torch.allclose(ours, theirs, atol=1e-12)


def test_recorded_statistics_are_the_task_average():
    module = smooth_network()
    x, _ = tasks(2, 3, 4)
    params = dict(module.named_parameters())
    both, first, second = {}, {}, {}
    task_forward(module, params, x, record=both)
    task_forward(module, params, x[:1], record=first)
    task_forward(module, params, x[1:], record=second)
    for name in both:
        assert torch.allclose(both[name][0], (first[name][0] + second[name][0]) / 2, atol=1e-12)
        assert torch.allclose(both[name][1], (first[name][1] + second[name][1]) / 2, atol=1e-12)


def test_running_statistics_without_running_estimates_is_a_clear_error():
    module = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3, track_running_stats=False))
    with pytest.raises(ValueError, match="track_running_stats=False; use bn_mode: transductive"):
        task_forward(module, dict(module.named_parameters()), torch.randn(1, 4, 2), statistics="running")
