"""The learned optimizer through the ``metalab`` command (in process): train l2o-lstm-quadratic, eval (table and
JSON), plot, resume, and a one-line error for an unknown option."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from metalab.cli import main


def test_train_eval_plot_resume_a_learned_optimizer(tmp_path: Path, capsys: pytest.CaptureFixture, one_thread):
    run = tmp_path / "l2o"
    tiny = ["steps=4", "problems_per_step=2", "net.hidden=4", "unroll=5", "horizon=10"]
    assert main(["train", "l2o-lstm-quadratic", f"run.dir={run}", *tiny]) == 0
    assert (run / "last.pt").is_file() and (run / "metrics.jsonl").read_text()
    capsys.readouterr()
    assert main(["eval", str(run), "--episodes", "3"]) == 0
    table = capsys.readouterr().out
    assert all(name in table for name in ("learned", "sgd", "adam", "rmsprop", "nesterov"))
    assert main(["eval", str(run), "--episodes", "3", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["problems"] == 3 and summary["eval_horizon"] == 20 and summary["table"]["adam"]["lr"] > 0
    assert main(["plot", str(run)]) == 0
    assert capsys.readouterr().out.strip() == str(run / "eval.png") and (run / "eval.png").stat().st_size > 0
    assert main(["train", "l2o-lstm-quadratic", f"run.dir={run}", *tiny[1:], "steps=6", "--resume"]) == 0
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 6
    assert main(["train", "l2o-lstm-quadratic", f"run.dir={run}", "problem.widht=3"]) == 1
    assert "unknown learned-optimizer option 'problem.widht=3'" in capsys.readouterr().err
