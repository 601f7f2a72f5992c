"""LRUA memory addressing (Santoro et al. 2016) against hand computations."""
from __future__ import annotations

import math

import torch

from metalab.algorithms.model.components.memory import MemoryState, content_weights, least_used_weights, lrua_step


def state_with(memory, usage, read_weights) -> MemoryState:
    memory = torch.tensor(memory, dtype=torch.float32)
    heads = len(read_weights[0])
    return MemoryState(memory, torch.tensor(usage), torch.tensor(read_weights), torch.zeros(1, heads, memory.shape[-1]))


def test_read_weights_are_a_softmax_of_cosine_similarities_summing_to_one():
    memory = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]])
    key = torch.tensor([[[3.0, 0.0]]])
    weights = content_weights(key, memory)
    cosines = [1.0, 0.0, 1 / math.sqrt(2)]
    expected = torch.tensor([math.exp(c) for c in cosines]) / sum(math.exp(c) for c in cosines)
    torch.testing.assert_close(weights[0, 0], expected)
    random = content_weights(torch.randn(4, 3, 5), torch.randn(4, 7, 5))
    torch.testing.assert_close(random.sum(-1), torch.ones(4, 3))


def test_least_used_weights_mark_the_smallest_usages():
    usage = torch.tensor([[0.5, 0.1, 0.9, 0.05]])
    assert least_used_weights(usage, 1).tolist() == [[0, 0, 0, 1]]
    assert least_used_weights(usage, 2).tolist() == [[0, 1, 0, 1]]


def test_closed_write_gate_writes_the_key_into_the_least_used_slot_after_erasing_it():
    # slot 2 is least used and holds old content, which is erased before the write
    state = state_with([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]], [[0.8, 0.6, 0.1]], [[[0.2, 0.7, 0.1]]])
    key = torch.tensor([[[0.3, -0.4]]])
    gate = torch.tensor([[-1e4]])  # sigmoid(alpha) = 0: write weights = least-used weights
    new, reads = lrua_step(state, key, gate, gamma=0.9)
    torch.testing.assert_close(new.memory[0], torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.3, -0.4]]))
    read = content_weights(key, state.memory)  # addressed on the memory before the write
    torch.testing.assert_close(new.read_weights, read)
    torch.testing.assert_close(reads, read @ new.memory)
    # usage_t = gamma * usage_{t-1} + read weights + write weights (write = one-hot slot 2)
    expected_usage = 0.9 * torch.tensor([0.8, 0.6, 0.1]) + read[0, 0] + torch.tensor([0.0, 0.0, 1.0])
    torch.testing.assert_close(new.usage[0], expected_usage)


def test_open_write_gate_writes_where_the_previous_read_was():
    state = state_with([[[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]], [[0.8, 0.6, 0.1]], [[[0.2, 0.7, 0.1]]])
    key = torch.tensor([[[1.0, 1.0]]])
    alpha = torch.tensor([[0.5]])
    new, _ = lrua_step(state, key, alpha, gamma=0.95)
    s = torch.sigmoid(alpha)[0, 0]
    write = s * torch.tensor([0.2, 0.7, 0.1]) + (1 - s) * torch.tensor([0.0, 0.0, 1.0])
    expected = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]) + write.unsqueeze(1) * torch.tensor([[1.0, 1.0]])
    torch.testing.assert_close(new.memory[0], expected)


def test_usage_decays_by_gamma_each_step():
    state = state_with([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 0.0]]], [[1.0, 2.0, 3.0, 4.0]],
                       [[[0.0, 0.0, 0.0, 0.0]]])
    usages = [state.usage[0].clone()]
    for _ in range(3):
        state, _ = lrua_step(state, torch.tensor([[[0.0, 1.0]]]), torch.tensor([[-1e4]]), gamma=0.5)
        usages.append(state.usage[0].clone())
    for before, after in zip(usages, usages[1:]):
        added = after - 0.5 * before
        # what is added each step is exactly one read (sums to 1) and one write (sums to 1)
        torch.testing.assert_close(added.sum(), torch.tensor(2.0))
    # with nothing read or written, usage would be gamma^t * initial: the old large usages shrink
    assert usages[-1][3] < 4.0 * 0.5**3 + 2.0 / (1 - 0.5) + 1e-6
    assert usages[-1][3] < usages[0][3]


def test_heads_share_least_used_slots_and_each_read_sums_to_one():
    state = MemoryState.initial(batch=2, slots=6, size=3, heads=2)
    for _ in range(4):
        state, reads = lrua_step(state, torch.randn(2, 2, 3), torch.randn(2, 2), gamma=0.95)
        torch.testing.assert_close(state.read_weights.sum(-1), torch.ones(2, 2))
        assert reads.shape == (2, 2, 3)


def test_a_key_retrieves_what_earlier_steps_stored_not_its_own_fresh_write():
    """Binding: a lookup key similar to a stored row must find that row, by the cosines with the old memory.

    Computed by hand: cosines of the key [1, 0.2, 0] with rows [1, 0, 1], [0, 1, 0], [0, 0, 0] (least used,
    written this step). Addressing after the write would give the fresh copy of the key a cosine of 1 and
    the largest weight.
    """
    stored = [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]
    state = state_with([stored], [[1.0, 1.0, 0.0]], [[[0.0, 0.0, 1.0]]])
    key = torch.tensor([[[1.0, 0.2, 0.0]]])
    written = torch.tensor([[[0.0, 0.0, -1.0]]])
    new, reads = lrua_step(state, key, torch.tensor([[-1e4]]), gamma=0.9, written=written)
    norm = math.sqrt(1.04)
    cosines = torch.tensor([1.0 / (norm * math.sqrt(2.0)), 0.2 / norm, 0.0])
    expected_weights = cosines.exp() / cosines.exp().sum()
    torch.testing.assert_close(new.read_weights[0, 0], expected_weights)
    assert int(new.read_weights[0, 0].argmax()) == 0
    # the written vector (not the key) went to the least-used slot; the read mixes the new memory
    new_memory = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, -1.0]])
    torch.testing.assert_close(new.memory[0], new_memory)
    torch.testing.assert_close(reads[0, 0], expected_weights @ new_memory)
