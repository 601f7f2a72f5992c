"""Per-step BatchNorm (MAML++'s BNWB + BNRS): set k normalises as torch's BatchNorm with set k's values, the
recorded statistics go to the set in use, and running estimates move as torch's own do."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from metalab.nn.batch_norm import (
    PerStepBatchNorm,
    batch_norm_step,
    merge_records,
    update_running_statistics,
    use_per_step_batch_norm,
)
from metalab.nn.reference import task_forward


def randomised(sets: int = 3, channels: int = 4) -> PerStepBatchNorm:
    norm = PerStepBatchNorm(channels, sets).double()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name in ("weight", "bias", "running_mean"):
            getattr(norm, name).copy_(torch.randn(sets, channels, generator=generator, dtype=torch.float64))
        norm.running_var.copy_(torch.rand(sets, channels, generator=generator, dtype=torch.float64) + 0.5)
    return norm


def torch_norm(norm: PerStepBatchNorm, k: int) -> nn.BatchNorm2d:
    """torch's BatchNorm2d holding set k of ``norm``."""
    plain = nn.BatchNorm2d(norm.num_features).double()
    with torch.no_grad():
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(plain, name).copy_(getattr(norm, name)[k])
    return plain


def test_set_k_normalises_as_torch_batch_norm_with_set_k():
    norm, x = randomised(), torch.randn(6, 4, 5, 5, dtype=torch.float64)
    for k in range(3):
        for training in (True, False):
            norm.train(training)
            plain = torch_norm(norm, k).train(training)
            with batch_norm_step([norm], k):
                assert torch.allclose(norm(x), plain(x), atol=1e-12)
    assert norm.step == 0  # the context restores the set


def test_replacing_keeps_names_and_values():
    torch.manual_seed(0)
    network = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU())
    with torch.no_grad():
        network[1].weight.uniform_()
        network[1].running_mean.uniform_()
    weight, mean = network[1].weight.clone(), network[1].running_mean.clone()
    layers = use_per_step_batch_norm(network, 4)
    assert layers == [network[1]] and isinstance(network[1], PerStepBatchNorm)
    assert dict(network.named_parameters())["1.weight"].shape == (4, 3)
    assert all(torch.equal(network[1].weight[k], weight) and torch.equal(network[1].running_mean[k], mean)
               for k in range(4))


def test_records_go_to_the_set_in_use_and_move_running_estimates_as_torch_does():
    norm = randomised()
    module = nn.Sequential(nn.Identity(), norm)
    x = torch.randn(1, 8, 4, 3, 3, dtype=torch.float64)  # one task
    record: dict = {}
    with batch_norm_step([norm], 1):
        task_forward(module, dict(module.named_parameters()), x, record=record)
    assert list(record) == ["1.[1]"]
    expected = torch_norm(norm, 1).train()
    expected(x[0])  # torch's own update of its running estimates (momentum 0.1, unbiased variance)
    before = norm.running_mean.clone()
    update_running_statistics(module, record)
    assert torch.allclose(norm.running_mean[1], expected.running_mean, atol=1e-12)
    assert torch.allclose(norm.running_var[1], expected.running_var, atol=1e-12)
    assert torch.equal(norm.running_mean[[0, 2]], before[[0, 2]])
    assert norm.num_batches_tracked.tolist() == [0, 1, 0]


def test_warmup_takes_the_cumulative_mean_until_the_momentum_takes_over():
    """momentum 0.25: updates 1-4 average the statistics seen so far (weights 1, 1/2, 1/3, 1/4), update 5 moves by
    0.25 (max(0.25, 1/5)); the initial estimates drop out at the first update. By hand on constant statistics."""
    norm = nn.BatchNorm2d(2, momentum=0.25).double()
    module = nn.Sequential(norm)
    values = [4.0, 2.0, 6.0, 0.0, 8.0]
    expected, mean = [], 0.0
    for n, value in enumerate(values, start=1):
        mean = sum(values[:n]) / n if n <= 4 else 0.75 * mean + 0.25 * value
        expected.append(mean)
    seen = []
    for value in values:
        stats = (torch.full((2,), value, dtype=torch.float64), torch.full((2,), value + 1, dtype=torch.float64))
        update_running_statistics(module, {"0.": stats}, warmup=True)
        seen.append(norm.running_mean[0].item())
        assert torch.allclose(norm.running_var, norm.running_mean + 1, atol=1e-12)
    assert seen == pytest.approx(expected, abs=1e-12) and expected == pytest.approx([4, 3, 4, 3, 4.25])
    assert int(norm.num_batches_tracked) == 5


def test_merged_records_weigh_each_entry_by_the_tasks_that_recorded_it():
    one, two = torch.ones(2), 2 * torch.ones(2)
    merged = merge_records([({"a": (one, one)}, 1), ({"a": (two, two), "b": (two, two)}, 3)])
    assert torch.allclose(merged["a"][0], (1 * one + 3 * two) / 4) and torch.allclose(merged["b"][0], two)
