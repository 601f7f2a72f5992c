"""evaluation_episodes: the one function that builds the episodes a learner is scored on."""
from __future__ import annotations

import pytest
import torch

from metalab.config import load_recipe
from metalab.data.episodes import EpisodeSampler, FixedEpisodes
from metalab.data.regression import regression_source
from metalab.data.sources import evaluation_episodes


def same_tasks(first, second) -> bool:
    pairs = list(zip(first.batches(4), second.batches(4), strict=True))
    return all(torch.equal(a.support_x, b.support_x) and torch.equal(a.query_y, b.query_y) for a, b in pairs)


def test_unset_settings_are_the_configs_eval_values():
    config = load_recipe("sinusoid-maml-5shot", ["eval.episodes=6", "eval.seed=3", "eval.queries=7"])
    expected = regression_source("sinusoid", config.data.test_split, shots=config.eval.shots, queries=7,
                                 seed=3).fixed(6)
    episodes = evaluation_episodes(config)
    assert len(episodes) == 6 and same_tasks(episodes, expected)


def test_given_settings_replace_the_configs():
    config = load_recipe("sinusoid-maml-5shot")
    expected = regression_source("sinusoid", "val", shots=10, queries=2, seed=5).fixed(4)
    assert same_tasks(evaluation_episodes(config, "val", shots=10, queries=2, seed=5, episodes=4), expected)


def test_a_manifest_gives_exactly_its_episodes(class_dataset, tmp_path, monkeypatch):
    config = load_recipe("omniglot-protonet-5w1s", ["data.dataset=folder"])
    saved = EpisodeSampler(class_dataset, ways=3, shots=2, queries=1, seed=9).fixed(5)
    saved.save(tmp_path / "episodes.json")
    monkeypatch.setattr("metalab.data.sources.load_split", lambda config, split, data_root=None: class_dataset)
    episodes = evaluation_episodes(config, "any", ways=5, seed=0, manifest=tmp_path / "episodes.json")
    assert isinstance(episodes, FixedEpisodes) and same_tasks(episodes, saved)


def test_a_manifest_of_regression_tasks_is_refused():
    with pytest.raises(ValueError,
                       match="--manifest applies to classification episodes; regression tasks are fixed by --seed"):
        evaluation_episodes(load_recipe("sinusoid-maml-5shot"), manifest="episodes.json")
