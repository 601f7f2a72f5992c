"""The evaluation protocol: CI formula against SciPy, fixed episodes, per-episode accuracy, batching that changes
no score, its progress bar and memory figure."""
from __future__ import annotations

import io
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch

from metalab.algorithms.metric.protonet import ProtoNet, ProtoNetOptions
from metalab.data.episodes import EpisodeSampler
from metalab.train.evaluate import episodes_per_batch, evaluate, mean_ci95, peak_memory_mb


def test_ci95_matches_scipy():
    scores = np.random.default_rng(0).uniform(0.5, 1.0, size=600)
    mean, ci95 = mean_ci95(scores.tolist())
    assert mean == pytest.approx(scores.mean(), abs=1e-12)
    assert ci95 == pytest.approx(1.96 * scipy.stats.sem(scores), rel=1e-12)
    low, high = scipy.stats.norm.interval(0.95, loc=scores.mean(), scale=scipy.stats.sem(scores))
    assert ci95 == pytest.approx((high - low) / 2, rel=1e-3)  # 1.96 vs the exact 1.95996 quantile


def test_evaluate_scores_each_fixed_episode(class_dataset):
    torch.manual_seed(0)
    learner = ProtoNet(ProtoNetOptions(name="protonet"), (1, 28, 28))
    episodes = EpisodeSampler(class_dataset, ways=5, shots=1, queries=3, seed=2).fixed(30)
    result = evaluate(learner, episodes, batch_size=7)
    assert result.episodes == 30 and result.ways == 5 and result.shots == 1 and result.queries == 3
    assert learner.training  # mode restored
    learner.eval()
    expected = []
    for batch in episodes.batches(30):
        expected = (learner.predict(batch).argmax(-1) == batch.query_y).double().mean(1)
    assert result.scores == pytest.approx(expected.tolist())
    assert result.mean == pytest.approx(float(expected.mean()))
    assert result.ci95 == pytest.approx(1.96 * float(expected.std()) / math.sqrt(30))
    again = evaluate(learner, episodes, batch_size=30)
    assert again.scores == result.scores
    summary = again.as_dict()
    assert {"accuracy", "ci95", "episodes", "ways", "shots", "queries", "seed"} <= set(summary)


class Terminal(io.StringIO):
    """A stream that says it is a terminal, so that progress bars draw on it."""

    def isatty(self) -> bool:
        return True


def _learner(name: str):
    """A small learner of the registry: 16 channels, one inner step at test."""
    from metalab.algorithms.registry import learner_class

    torch.manual_seed(0)
    cls = learner_class(name)
    small = {key: value for key, value in (("hidden", 16), ("inner_steps_test", 1))
             if key in cls.Options.__dataclass_fields__}
    return cls(cls.Options(name=name, **small), (1, 28, 28))


@pytest.mark.parametrize("name", ["protonet", "matching", "relation", "maml", "baseline"])
def test_scores_do_not_depend_on_how_episodes_are_batched(class_dataset, name, one_thread):
    """speed.eval_batch and speed.eval_images change time and memory only: every batching scores each episode
    as the learner scores it alone."""
    learner = _learner(name)
    episodes = EpisodeSampler(class_dataset, ways=5, shots=1, queries=3, seed=4).fixed(12)
    learner.eval()
    alone = [float((learner.predict(batch).argmax(-1) == batch.query_y).double().mean())
             for batch in episodes.batches(1)]
    for batch_size, max_images in [(12, None), (12, 1), (5, 10**6), (12, 3 * 5 * 4)]:
        assert evaluate(learner, episodes, batch_size, max_images=max_images).scores == alone, (batch_size, max_images)


def test_a_forward_pass_holds_at_most_the_bound_in_images(class_dataset, one_thread):
    learner = _learner("protonet")
    seen: list[int] = []
    predict = learner.predict
    learner.predict = lambda batch: seen.append(batch.support_x.shape[:2].numel() + batch.query_x.shape[:2].numel()) \
        or predict(batch)
    episodes = EpisodeSampler(class_dataset, ways=5, shots=2, queries=3, seed=0).fixed(10)  # 25 images each
    evaluate(learner, episodes, batch_size=8, max_images=60)
    assert seen == [50] * 5
    seen.clear()
    evaluate(learner, episodes, batch_size=8, max_images=10)  # smaller than one episode: one at a time
    assert seen == [25] * 10
    seen.clear()
    evaluate(learner, episodes, batch_size=8)
    assert seen == [200, 50]
    assert episodes_per_batch(episodes, 20, 1600) == 20 and episodes_per_batch(episodes, 100, 1600) == 64


def test_a_progress_bar_counts_the_episodes_on_a_terminal_only(class_dataset, monkeypatch, one_thread):
    learner = _learner("protonet")
    episodes = EpisodeSampler(class_dataset, ways=5, shots=1, queries=3, seed=0).fixed(12)
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    evaluate(learner, episodes, batch_size=5, progress=True)
    assert "evaluating" in terminal.getvalue() and "12/12" in terminal.getvalue()
    for progress, stream in [(False, Terminal()), (True, io.StringIO())]:  # train.progress=false; not a terminal
        monkeypatch.setattr(sys, "stderr", stream)
        evaluate(learner, episodes, batch_size=5, progress=progress)
        assert stream.getvalue() == ""


def test_peak_memory_is_this_process_resident_peak():
    """ru_maxrss against /proc's VmHWM (the same figure, Linux only), in MiB."""
    status = Path("/proc/self/status")
    if not status.exists():
        pytest.skip("needs Linux's /proc")
    peak = peak_memory_mb()
    high_water = next(int(line.split()[1]) for line in status.read_text().splitlines() if line.startswith("VmHWM:"))
    assert peak == pytest.approx(high_water / 1024, rel=0.05)
