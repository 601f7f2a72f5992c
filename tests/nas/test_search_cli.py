"""`metalab nas search` on digits for a few steps (cold, second order, warm-started) and `metalab plot RUN`."""
from __future__ import annotations

import json

import pytest
import torch

from metalab.cli import main
from metalab.nas.genotype import Genotype
from metalab.nas.search import load_config, read_history, steps_to_reach

TINY = ["search.steps=2", "search.eval_every=2", "search.batch=16", "space.cells=2", "space.channels=2",
        "space.nodes=2", "space.reductions=[1]", "retrain.steps=2", "retrain.channels=2", "retrain.cells=2",
        "task.classes=[0,1,2]", "threads=1"]


def test_search_warm_start_and_plot(tmp_path, capsys):
    cold = tmp_path / "cold"
    assert main(["nas", "search", "digits-darts", *TINY, f"run_dir={cold}", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["task"] == "digits-012" and 0.0 <= result["derived_test_accuracy"] <= 1.0
    assert result["conv4_parameters"] > 0 and result["derived_parameters"] > 0
    genotype = Genotype.load(cold / "genotype.json")
    assert genotype.nodes == 2 and all(len(node) == 2 for node in genotype.normal)
    history = read_history(cold)
    assert [entry["step"] for entry in history] == [0, 2]
    assert len(history[0]["alpha_normal"]) == 5 and len(history[0]["alpha_normal"][0]) == 8

    warm = tmp_path / "warm"
    assert main(["nas", "search", "digits-darts", *TINY, "search.order=2", "search.warm_start_weights=true",
                 "task.classes=[3,4,5]", "retrain.steps=0", f"run_dir={warm}", "--warm-start", str(cold)]) == 0
    assert "genotype of digits-345" in capsys.readouterr().out
    cold_state = torch.load(cold / "search.pt", weights_only=True)["model"]
    first = read_history(warm)[0]
    assert torch.allclose(torch.softmax(cold_state["body.alpha_normal"], -1),
                          torch.tensor(first["alpha_normal"], dtype=torch.float32))  # it started from cold's alpha

    assert main(["plot", str(cold)]) == 0
    drawn = capsys.readouterr().out.split()
    assert [p.rsplit("/", 1)[-1] for p in drawn] == ["cell.png", "alpha.png"]
    assert all((cold / name).stat().st_size > 1000 for name in ("cell.png", "alpha.png"))


def test_bad_search_settings_are_named(capsys):
    with pytest.raises(ValueError, match="search.order"):
        load_config("digits-darts", ["search.order=3"])
    with pytest.raises(ValueError, match="no NAS preset"):
        load_config("cifar-darts")
    with pytest.raises(ValueError, match="stepz.*steps"):
        load_config("digits-darts", ["search.stepz=3"])
    assert main(["nas", "search", "digits-darts", "--warm-start", "/nonexistent", *TINY]) == 1
    assert "no search.pt" in capsys.readouterr().err


def test_steps_to_reach():
    history = [{"step": 0, "val_accuracy": 0.1}, {"step": 5, "val_accuracy": 0.6}, {"step": 10, "val_accuracy": 0.8}]
    assert steps_to_reach(history, 0.6) == 5 and steps_to_reach(history, 0.9) is None
