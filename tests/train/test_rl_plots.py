"""The meta-RL plot of return against the stage of adaptation, from a run's results.json."""
from __future__ import annotations

import json

import pytest

from metalab.train.rl_plots import plot_adaptation


def test_return_against_gradient_steps_and_against_episodes_of_a_trial(tmp_path):
    stages = {"return_0": [-40.0, 2.0], "return_1": [-20.0, 1.5]}
    (tmp_path / "results.json").write_text(json.dumps({"test": {"mean": -12.0, "ci95": 1.0, "episodes": 40,
                                                                "stages": stages}}))
    assert plot_adaptation(tmp_path).stat().st_size > 0
    trial = {"first_episode": [3.0, 0.2], "last_episode": [4.0, 0.2]}
    (tmp_path / "results.json").write_text(json.dumps({"test": {"mean": 7.0, "ci95": 0.3, "episodes": 10,
                                                                "stages": trial}}))
    assert plot_adaptation(tmp_path, tmp_path / "trial.png") == tmp_path / "trial.png"


def test_a_run_without_results_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="has not finished its test"):
        plot_adaptation(tmp_path)
