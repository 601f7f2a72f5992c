"""PLATIPUS, BMAML and ABML through the command line: a sinusoid recipe trains, evaluates, saves and reloads, and
plots its predictive distribution; a run evaluates on the ambiguous tasks."""
from __future__ import annotations

import json

import pytest

from metalab.cli import main
from metalab.train.build import load_run
from metalab.train.plots import plot_run

QUICK = ["train.steps=2", "eval.episodes=4", "eval.val_episodes=2", "train.val_every=2", "run.tensorboard=false",
         "train.progress=false", "learner.mlp_hidden=[8]"]


@pytest.mark.parametrize("name", ["platipus", "bmaml", "abml"])
def test_sinusoid_recipe_trains_evaluates_and_plots(name, tmp_path):
    run = tmp_path / name
    assert main(["train", f"sinusoid-{name}-5shot", *QUICK, f"run.dir={run}"]) == 0
    result = json.loads((run / "results.json").read_text())["test"]
    assert result["metric"] == "mse" and result["episodes"] == 4
    learner, config, _ = load_run(run)
    assert config.learner.name == name and learner.task_kind == "regression"
    path = plot_run(run, tasks=2)
    assert path.name == "predictive.png" and path.stat().st_size > 10_000
    if name == "platipus":  # a run scored on the ambiguous tasks, as the ambiguous recipes' runs are
        assert main(["eval", str(run), "data.dataset=ambiguous", "--episodes", "3", "--json"]) == 0
