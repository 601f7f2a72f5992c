"""EpisodeSampler invariants, seed determinism, manifests, and its clear errors."""
from __future__ import annotations

import json

import pytest
import torch

from metalab.data.classes import ClassDataset
from metalab.data.episodes import EpisodeSampler, FixedEpisodes
from metalab.data.task import Task


def test_task_shapes_labels_and_disjoint_items(class_dataset):
    sampler = EpisodeSampler(class_dataset, ways=5, shots=2, queries=3, seed=0)
    for index in range(20):
        episode = sampler.episode(index)
        assert len(set(episode.classes)) == 5
        for support, query in zip(episode.support, episode.query):
            assert len(support) == 2 and len(query) == 3
            assert not set(support) & set(query)
        task = sampler.task(index)
        assert task.support_x.shape == (10, 1, 28, 28) and task.query_x.shape == (15, 1, 28, 28)
        assert task.support_y.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
        assert task.query_y.tolist() == sum(([k] * 3 for k in range(5)), [])
        assert 0.0 <= task.support_x.min() and task.support_x.max() <= 1.0


def test_task_images_are_the_sampled_items(class_dataset):
    sampler = EpisodeSampler(class_dataset, ways=3, shots=1, queries=2, seed=4)
    episode, task = sampler.episode(7), sampler.task(7)
    for label, cls in enumerate(episode.classes):
        expected = class_dataset.get(cls, episode.support[label])
        assert torch.equal(task.support_x[label : label + 1], expected)
        expected_query = class_dataset.get(cls, episode.query[label])
        assert torch.equal(task.query_x[2 * label : 2 * label + 2], expected_query)


def test_seed_determinism_and_batches(class_dataset):
    a = EpisodeSampler(class_dataset, 5, 1, 2, seed=3)
    b = EpisodeSampler(class_dataset, 5, 1, 2, seed=3)
    c = EpisodeSampler(class_dataset, 5, 1, 2, seed=4)
    assert [a.episode(i) for i in range(10)] == [b.episode(i) for i in range(10)]
    assert [a.episode(i) for i in range(10)] != [c.episode(i) for i in range(10)]
    batch = a.batch(4, 3)
    assert batch.support_x.shape == (3, 5, 1, 28, 28)
    for offset in range(3):
        single = a.task(4 + offset)
        assert torch.equal(batch[offset].query_x, single.query_x)
        assert torch.equal(batch[offset].support_y, single.support_y)
    # Two halves of a meta-batch (as two distributed ranks take them) make the whole.
    assert torch.equal(Task.cat([a.batch(8, 2), a.batch(10, 2)]).support_x, a.batch(8, 4).support_x)


def test_within_group_draws_all_ways_from_one_group(class_dataset):
    sampler = EpisodeSampler(class_dataset, ways=3, shots=1, queries=1, seed=0, within_group=True)
    for index in range(30):
        groups = {class_dataset.groups[c] for c in sampler.episode(index).classes}
        assert len(groups) == 1


def test_all_classes_and_items_get_sampled(class_dataset):
    sampler = EpisodeSampler(class_dataset, ways=5, shots=1, queries=1, seed=0)
    seen_classes, seen_items = set(), set()
    for index in range(200):
        episode = sampler.episode(index)
        seen_classes.update(episode.classes)
        seen_items.update(episode.support[0])
    assert seen_classes == set(range(class_dataset.num_classes))
    assert seen_items == set(range(8))


def test_too_many_ways_is_a_clear_error(class_dataset):
    with pytest.raises(ValueError, match="13-way episodes need 13 classes but synthetic has only 12"):
        EpisodeSampler(class_dataset, ways=13, shots=1, queries=1)


def test_too_many_shots_and_queries_is_a_clear_error(class_dataset):
    with pytest.raises(ValueError, match=r"5 shots \+ 4 queries need 9 items per class.*has only 8"):
        EpisodeSampler(class_dataset, ways=2, shots=5, queries=4)


def test_within_group_needs_a_big_enough_group(class_dataset):
    with pytest.raises(ValueError, match="largest group of synthetic has 4"):
        EpisodeSampler(class_dataset, ways=5, shots=1, queries=1, within_group=True)


def test_manifest_round_trip_scores_the_same_episodes(class_dataset, tmp_path):
    fixed = EpisodeSampler(class_dataset, 4, 2, 3, seed=11).fixed(25)
    path = tmp_path / "episodes.json"
    fixed.save(path)
    manifest = json.loads(path.read_text())
    assert manifest["ways"] == 4 and manifest["seed"] == 11 and len(manifest["episodes"]) == 25
    assert set(manifest["episodes"][0]) >= {"classes", "class_ids", "support", "query"}
    loaded = FixedEpisodes.load(path, class_dataset)
    assert loaded.episodes == fixed.episodes
    for a, b in zip(loaded.batches(10), fixed.batches(10)):
        assert torch.equal(a.query_x, b.query_x)


def test_manifest_from_another_dataset_is_rejected(class_dataset, tmp_path):
    path = tmp_path / "episodes.json"
    EpisodeSampler(class_dataset, 4, 1, 1, seed=0).fixed(3).save(path)
    other = ClassDataset(class_dataset.images, class_dataset.class_items,
                         [f"other{c}" for c in range(12)], name="other")
    with pytest.raises(ValueError, match="score the manifest on the split it was written for"):
        FixedEpisodes.load(path, other)


def test_rotations_are_new_classes(class_dataset):
    rotated = class_dataset.with_rotations()
    assert rotated.num_classes == 4 * class_dataset.num_classes
    name = class_dataset.class_names[2]
    base = class_dataset.get(2, [0])
    turned = rotated.get(rotated.class_index(f"{name}/rot090"), [0])
    assert torch.equal(turned, torch.rot90(base, 1, dims=(2, 3)))
    assert rotated.groups[rotated.class_index(f"{name}/rot180")] == class_dataset.groups[2]


def _broken(manifest: dict, change: str) -> object:
    """A manifest written by FixedEpisodes.save with one thing changed, as a user's editor or script might."""
    first = manifest["episodes"][0]
    changes = {
        "a list": lambda: manifest["episodes"],
        "no format": lambda: {k: v for k, v in manifest.items() if k != "format"},
        "ways as text": lambda: {**manifest, "ways": "4"},
        "no episodes": lambda: {**manifest, "episodes": []},
        "episodes an object": lambda: {**manifest, "episodes": {"0": first}},
        "an episode a list": lambda: {**manifest, "episodes": [first["classes"]]},
        "a class missing": lambda: {**manifest, "episodes": [{**first, "classes": first["classes"][:-1]}]},
        "a shot missing": lambda: {**manifest, "episodes": [{**first, "support": [s[:-1] for s in first["support"]]}]},
        "a negative item": lambda: {**manifest,
                                    "episodes": [{**first, "query": [[-1] * len(q) for q in first["query"]]}]},
        "an item as text": lambda: {**manifest,
                                    "episodes": [{**first, "query": [["0"] * len(q) for q in first["query"]]}]},
    }
    return changes[change]()


@pytest.mark.parametrize("change, message", [
    ("a list", "holds a list, not the JSON object that --save-manifest writes"),
    ("no format", "is not a metalab episode manifest (format None, expected 'metalab-episodes/1')"),
    ("ways as text", "'ways' must be an integer >= 1, got '4'"),
    ("no episodes", "'episodes' must be a non-empty list, got a list (empty)"),
    ("episodes an object", "'episodes' must be a non-empty list, got an object"),
    ("an episode a list", "episode 0 is a list, not an object with classes, support and query"),
    ("a class missing", "episode 0: 'classes' must be a list of 4 class names (the manifest's ways), got a list of 3"),
    ("a shot missing", "episode 0: 'support' must be 4 lists (one per class) of 2 item indices"),
    ("a negative item", "episode 0: 'query' must be 4 lists (one per class) of 3 item indices (integers >= 0)"),
    ("an item as text", "episode 0: 'query' must be 4 lists"),
])
def test_a_manifest_that_save_could_not_have_written_is_named(class_dataset, tmp_path, change, message):
    """A JSON list raised AttributeError ('list' object has no attribute 'get'); a missing shot reached a
    tensor reshape, a negative item index silently took an item from the end of its class."""
    path = tmp_path / "episodes.json"
    EpisodeSampler(class_dataset, ways=4, shots=2, queries=3, seed=11).fixed(3).save(path)
    path.write_text(json.dumps(_broken(json.loads(path.read_text()), change)))
    with pytest.raises(ValueError) as caught:
        FixedEpisodes.load(path, class_dataset)
    assert message in str(caught.value) and str(path) in str(caught.value)
