"""WarpGrad's multi-alphabet Omniglot tasks: the alphabet splits are disjoint and built from the Lake archives'
alphabets with >= 20 characters; a task's classes come from one alphabet, its queries are each character's first
5 drawings (in file order) and its support the others; a class set with held-out items refuses what does not fit."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from metalab.data.classes import ClassDataset
from metalab.data.episodes import EpisodeSampler, episode_task
from metalab.data.omniglot import alphabet_split, load_omniglot


def test_alphabet_split_is_a_partition_of_the_eligible_alphabets():
    groups = [f"a{i}" for i in range(50) for _ in range(10 + i)]  # alphabet a_i has 10 + i characters
    splits = {name: alphabet_split(groups, name) for name in ("train", "val", "test")}
    assert [len(splits[name]) for name in ("train", "test", "val")] == [25, 10, 5]  # 40 alphabets with >= 20
    assert set().union(*splits.values()) == {f"a{i}" for i in range(10, 50)}
    assert sum(len(names) for names in splits.values()) == 40  # disjoint
    assert alphabet_split(groups, "train") == splits["train"]  # the same every time (a seeded shuffle)


def test_held_out_items_are_the_only_queries_and_the_rest_the_support():
    images = torch.arange(3 * 6, dtype=torch.uint8).view(-1, 1, 1, 1)  # item value = its index
    data = ClassDataset(images, [list(range(c * 6, c * 6 + 6)) for c in range(3)], ["x", "y", "z"], held_out=2)
    sampler = EpisodeSampler(data, ways=3, shots=4, queries=2)
    for index in range(5):
        episode = sampler.episode(index)
        assert all(set(q) == {0, 1} for q in episode.query)
        assert all(set(s) == {2, 3, 4, 5} for s in episode.support)
    with pytest.raises(ValueError, match="queries <= 2"):
        EpisodeSampler(data, ways=3, shots=1, queries=3)
    with pytest.raises(ValueError, match="shots <= 4"):
        EpisodeSampler(data, ways=3, shots=5, queries=1)


@pytest.mark.usefixtures("full_cache")
def test_the_alphabet_splits_and_their_tasks_on_the_real_archives(full_root: Path):
    splits = {name: load_omniglot(f"alphabets-{name}", full_root) for name in ("train", "val", "test")}
    alphabets = {name: set(data.group_classes()) for name, data in splits.items()}
    assert [len(alphabets[name]) for name in ("train", "val", "test")] == [25, 11, 10]
    assert not (alphabets["train"] & alphabets["test"] or alphabets["train"] & alphabets["val"]
                or alphabets["val"] & alphabets["test"])
    lake = [load_omniglot(f"lake-{name}", full_root) for name in ("background", "evaluation")]
    eligible = {group for data in lake for group, members in data.group_classes().items() if len(members) >= 20}
    assert len(eligible) == 46 and set().union(*alphabets.values()) == eligible
    for name, data in splits.items():  # every character of a split's alphabets, all 20 drawings
        expected = sum(len(d.group_classes()[g]) for d in lake for g in d.group_classes() if g in alphabets[name])
        assert data.num_classes == expected and all(data.items_in(c) == 20 for c in range(data.num_classes))
    test = splits["test"]
    for index in range(3):
        episode = EpisodeSampler(test, ways=20, shots=15, queries=5, seed=index, within_group=True).episode(index)
        assert len({test.groups[c] for c in episode.classes}) == 1  # one alphabet per task
        task = episode_task(test, episode)
        for way in (0, 19):
            character = test.class_names[episode.classes[way]]
            source = next(d for d in lake if character in d.class_names)
            drawings = source.get(source.class_index(character), list(range(20)))  # in file order
            queries = task.query_x[task.query_y == way]
            support = task.support_x[task.support_y == way]
            assert len(queries) == 5 and len(support) == 15
            assert all(any(torch.equal(q, d) for d in drawings[:5]) for q in queries)
            assert all(any(torch.equal(s, d) for d in drawings[5:]) for s in support)
