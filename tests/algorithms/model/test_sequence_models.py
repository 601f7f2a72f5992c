"""Sequence encodings and the sequence learners: causality, time-offset labels, queries in parallel."""
from __future__ import annotations

import pytest
import torch

from metalab.algorithms.model.blackbox import BlackBoxLSTM, BlackBoxOptions
from metalab.algorithms.model.components.sequence import offset_label_steps, query_sequences, shuffle_support
from metalab.algorithms.model.mann import MANN, MANNOptions, accuracy_by_presentation
from metalab.algorithms.model.snail import SNAIL, AttentionBlock, SNAILNet, SNAILOptions, TCBlock
from metalab.data.task import Task

SHAPE = (1, 12, 12)


def test_time_offset_labels_carry_the_previous_steps_label():
    features = torch.arange(6.0).view(1, 3, 2)
    steps = offset_label_steps(features, torch.tensor([[2, 0, 1]]), label_size=3)
    assert steps[0, :, 2:].tolist() == [[0, 0, 0], [0, 0, 1], [1, 0, 0]]
    torch.testing.assert_close(steps[..., :2], features)


def test_query_sequences_share_the_support_prefix_and_end_with_one_query():
    support = torch.arange(2 * 3 * 1.0).view(2, 3, 1)
    queries = 100 + torch.arange(2 * 2 * 1.0).view(2, 2, 1)
    sequences = query_sequences(support, queries)
    assert sequences.shape == (4, 4, 1)
    assert sequences[:, :, 0].tolist() == [[0, 1, 2, 100], [0, 1, 2, 101], [3, 4, 5, 102], [3, 4, 5, 103]]


def test_support_shuffle_is_fixed_in_evaluation_and_keeps_pairs():
    features = torch.arange(10.0).view(1, 10, 1).expand(3, -1, -1)
    labels = torch.arange(10).expand(3, -1)
    a, la = shuffle_support(features, labels, training=False)
    b, lb = shuffle_support(features, labels, training=False)
    assert torch.equal(a, b) and torch.equal(la, lb)
    assert torch.equal(a[..., 0].long(), la)  # each feature keeps its label
    assert sorted(la[0].tolist()) == list(range(10)) and la[0].tolist() != list(range(10))


def test_snail_blocks_are_causal():
    torch.manual_seed(0)
    net = SNAILNet(in_channels=7, out_size=3, sequence_length=9, filters=8, attention=((8, 4), (8, 4)))
    steps = torch.randn(2, 9, 7)
    out = net(steps)
    for t in range(8):
        changed = steps.clone()
        changed[:, t + 1 :] = torch.randn_like(changed[:, t + 1 :])
        later = net(changed)
        torch.testing.assert_close(later[:, : t + 1], out[:, : t + 1])  # no output up to t depends on later steps
        assert not torch.allclose(later[:, t + 1 :], out[:, t + 1 :])
    assert TCBlock(4, 9, 2).out_channels == 4 + 4 * 2  # ceil(log2 9) = 4 dense blocks
    assert AttentionBlock(4, 3, 5)(torch.randn(1, 2, 4)).shape == (1, 2, 9)


@pytest.mark.parametrize("support", [1, 5, 9])
def test_snail_query_steps_on_a_shared_prefix_equal_one_sequence_per_query(support):
    """The fast path (prefix once per task, one step per query) against the literal one: each query
    the last step of its own full sequence; prefixes shorter and longer than the largest dilation."""
    torch.manual_seed(0)
    net = SNAILNet(in_channels=7, out_size=3, sequence_length=10, filters=8,
                   attention=((8, 4), (8, 4), (6, 5))).double()
    prefix, queries = torch.randn(2, support, 7, dtype=torch.float64), torch.randn(2, 4, 7, dtype=torch.float64)
    literal = net(query_sequences(prefix, queries))[:, -1].view(2, 4, 3)
    torch.testing.assert_close(net.query_outputs(prefix, queries), literal, rtol=1e-12, atol=1e-12)


def test_snail_reaches_every_earlier_step():
    torch.manual_seed(0)
    net = SNAILNet(in_channels=3, out_size=2, sequence_length=8, filters=4, attention=((4, 4), (4, 4)))
    steps = torch.randn(1, 8, 3, requires_grad=True)
    net(steps)[0, -1].sum().backward()
    assert (steps.grad[0].abs().sum(-1) > 0).all()


def episode(ways=3, shots=2, queries=2, tasks=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    support_x = torch.rand(tasks, ways * shots, *SHAPE, generator=generator)
    query_x = torch.rand(tasks, ways * queries, *SHAPE, generator=generator)
    support_y = torch.arange(ways).repeat_interleave(shots).expand(tasks, -1)
    return support_x, support_y, query_x


def sequence_learners():
    torch.manual_seed(0)
    return [
        SNAIL(SNAILOptions(name="snail", encoder="pixels", max_ways=4, sequence_length=7, filters=8), SHAPE),
        BlackBoxLSTM(BlackBoxOptions(name="blackbox", encoder="pixels", lstm_size=16, max_ways=4), SHAPE),
        MANN(MANNOptions(name="mann", encoder="pixels", controller_size=16, memory_slots=8, memory_size=5,
                         read_heads=2, max_ways=4), SHAPE),
    ]


def test_a_querys_prediction_does_not_depend_on_the_other_queries():
    support_x, support_y, query_x = episode()
    for learner in sequence_learners():
        learner.eval()
        with torch.no_grad():
            together = learner.logits(support_x, support_y, query_x, 3)
            alone = torch.stack([learner.logits(support_x, support_y, query_x[:, q : q + 1], 3)[:, 0]
                                 for q in range(query_x.shape[1])], dim=1)
            changed = query_x.clone()
            changed[:, 1:] = torch.rand_like(changed[:, 1:])
            first_again = learner.logits(support_x, support_y, changed, 3)[:, 0]
        torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5, msg=type(learner).__name__)
        torch.testing.assert_close(together[:, 0], first_again, rtol=1e-4, atol=1e-5, msg=type(learner).__name__)


def test_sequence_learners_use_the_support_labels():
    support_x, support_y, query_x = episode()
    for learner in sequence_learners():
        learner.eval()
        with torch.no_grad():
            original = learner.logits(support_x, support_y, query_x, 3)
            relabelled = learner.logits(support_x, (support_y + 1) % 3, query_x, 3)
        assert not torch.allclose(original, relabelled), type(learner).__name__


def test_mann_step_t_does_not_see_the_label_of_step_t():
    torch.manual_seed(0)
    mann = sequence_learners()[2].eval()
    x = torch.rand(1, 6, *SHAPE)
    y = torch.tensor([[0, 1, 2, 0, 1, 2]])
    with torch.no_grad():
        logits = mann.sequence_logits(x, y)
        y_changed = y.clone()
        y_changed[0, 3] = 1
        changed = mann.sequence_logits(x, y_changed)
    torch.testing.assert_close(changed[:, :4], logits[:, :4])  # label 3 arrives at step 4
    assert not torch.allclose(changed[:, 4:], logits[:, 4:])


def test_accuracy_by_presentation_counts_instances_per_class():
    labels = torch.tensor([[0, 1, 0, 1, 0]])  # instances 1, 1, 2, 2, 3
    predicted = torch.tensor([[1, 1, 0, 0, 0]])  # wrong, right, right, wrong, right
    logits = torch.nn.functional.one_hot(predicted, 2).float()
    assert accuracy_by_presentation(logits, labels, (1, 2, 3, 5)) == {1: 0.5, 2: 0.5, 3: 1.0}


def test_mann_feedforward_controller_reads_the_memory_only():
    torch.manual_seed(0)
    mann = MANN(MANNOptions(name="mann", encoder="pixels", controller="feedforward", controller_size=16,
                            memory_slots=8, memory_size=5, read_heads=2, max_ways=4), SHAPE).eval()
    x, y = torch.rand(2, 5, *SHAPE), torch.tensor([[0, 1, 0, 1, 2]] * 2)
    with torch.no_grad():
        logits = mann.sequence_logits(x, y)
        # without a recurrent state, step 1 can only know step 0 through the memory (and the offset label)
        state = mann.initial_state(2, x)
        first, state = mann.step(torch.cat([x[:, 0].flatten(1), torch.zeros(2, 4)], -1), state)
    assert logits.shape == (2, 5, 4)
    torch.testing.assert_close(logits[:, 0], first)
    assert state[0] is None and state[1].usage.sum() > 0


def test_predict_on_a_batch_equals_adapt_on_each_task():
    support_x, support_y, query_x = episode(tasks=3)
    batch = Task(support_x, support_y, query_x, torch.zeros(query_x.shape[:2], dtype=torch.long))
    for learner in sequence_learners():
        learner.eval()
        batched = learner.predict(batch)
        for t in range(3):
            single = learner.adapt(support_x[t], support_y[t])(query_x[t])
            torch.testing.assert_close(single, batched[t], rtol=1e-4, atol=1e-5, msg=type(learner).__name__)


def copy_tasks(tasks: int, ways: int, shape=(1, 4, 4)) -> Task:
    """Each query is an exact copy of one support image: its label can only be read from the support steps."""
    support_x = torch.randn(tasks, ways, *shape)
    query_y = torch.rand(tasks, ways).argsort(1)  # every support image once, in random order
    query_x = support_x.gather(1, query_y.view(tasks, ways, 1, 1, 1).expand(-1, -1, *shape))
    return Task(support_x, torch.arange(ways).expand(tasks, -1), query_x, query_y)


def test_snail_learns_to_read_the_querys_label_from_the_matching_support_step():
    """Chance is 1/3; the answer is only in the (shuffled) support sequence, so a misaligned label, a leaked
    or missing query label slot, or a wrong output position keeps the accuracy at chance."""
    torch.manual_seed(0)
    ways = 3
    snail = SNAIL(SNAILOptions(name="snail", encoder="pixels", max_ways=ways, sequence_length=ways + 1, filters=16),
                  (1, 4, 4))
    optimizer = torch.optim.Adam(snail.parameters(), lr=1e-3)
    for _ in range(150):
        optimizer.zero_grad()
        snail.meta_step(copy_tasks(16, ways))
        optimizer.step()
    snail.eval()
    test = copy_tasks(64, ways)
    accuracy = (snail.predict(test).argmax(-1) == test.query_y).float().mean()
    assert accuracy > 0.8, f"accuracy {float(accuracy):.2f}"
