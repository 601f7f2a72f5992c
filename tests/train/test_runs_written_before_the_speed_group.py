"""Run directories written by metalab before the execution options became the ``speed`` group (their configs
hold ``learner.task_chunk``, ``train.threads``, ``eval.batch``, ...) still load, score exactly what they
scored when they were written, and resume. The two fixtures are 2-step sinusoid runs (MAML, and Reptile with
its carried inner Adam) written by commit c04787a."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from metalab.cli import main
from metalab.train.checkpoint import LAST, load_checkpoint

FIXTURES = Path(__file__).parent / "data" / "written-before-the-speed-group"


@pytest.mark.parametrize("name", ["maml-sinusoid", "reptile-sinusoid"])
def test_an_old_run_scores_what_it_scored_and_resumes(name, tmp_path, capsys):
    run = tmp_path / name
    shutil.copytree(FIXTURES / name, run)
    saved = load_checkpoint(run / LAST)["config"]
    assert "batch" in saved["eval"] or "threads" in saved["train"]  # the old layout, really
    assert main(["eval", str(run), "--checkpoint", str(run / LAST), "--episodes", "3", "--json"]) == 0
    scored = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    recorded = json.loads((run / "results.json").read_text())["test"]
    assert scored["mse"] == pytest.approx(recorded["mse"], rel=1e-12, abs=0)
    assert main(["train", str(run), "--resume", "train.steps=3", "train.progress=false"]) == 0
    resumed = load_checkpoint(run / LAST)
    assert resumed["step"] == 3 and "speed" in resumed["config"]
