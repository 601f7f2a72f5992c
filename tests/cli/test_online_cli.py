"""``metalab online``: an online recipe's run directory (results, CSV, checkpoint, plot), a stream run stopped after
two tasks and resumed equal to the uninterrupted one, and the errors that point between ``train`` and ``online``."""
from __future__ import annotations

import csv
import json

import pytest

from metalab.cli import main
from metalab.train import online_run

TINY = ["online.per_stage=1", "online.max_data=20", "online.arrival=10", "online.updates=1", "online.minibatch=4",
        "online.methods=[ftml,tfs]", "online.target=0.3", "online.queries=2", "learner.hidden=4",
        "learner.inner_steps_test=1", "train.progress=false"]


def results(run_dir) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def test_online_run_writes_results_csv_checkpoint_and_plot_and_resumes_exactly(tmp_path, capsys, monkeypatch,
                                                                             one_thread):
    run_dir = tmp_path / "run"
    assert main(["online", "rainbow-digits-ftml", *TINY, f"run.dir={run_dir}"]) == 0
    written = results(run_dir)
    assert written["tasks_done"] == written["tasks"] == 4  # one task of each of the four rotation stages
    assert written["stream_tasks"] == [0, 14, 28, 42] and written["stages"][0] == "rotation0"
    for method in ("ftml", "tfs"):
        tasks = written["methods"][method]["tasks"]
        for task in tasks:  # the efficiency is the first arrival whose accuracy reached the target
            reached = [10 * (i + 1) for i, a in enumerate(task["accuracies"]) if a >= 0.3]
            assert task["efficiency"] == (reached[0] if reached else None) and len(task["accuracies"]) == 2
        assert written["methods"][method]["reached"] == sum(t["efficiency"] is not None for t in tasks)
    rows = list(csv.DictReader((run_dir / "efficiency.csv").open()))
    assert [(r["method"], int(r["stream_task"])) for r in rows] == [(m, t) for m in ("ftml", "tfs")
                                                                    for t in (0, 14, 28, 42)]
    assert (run_dir / "last.pt").is_file() and "ftml" in capsys.readouterr().out
    assert main(["plot", str(run_dir)]) == 0
    assert (run_dir / "efficiency.png").stat().st_size > 0
    assert main(["eval", str(run_dir)]) == 1  # not a meta-trained learner: the error names results.json
    assert "results.json" in capsys.readouterr().err
    resumed_run_goes_on_as_the_uninterrupted_one(run_dir, tmp_path / "cut", monkeypatch)


def resumed_run_goes_on_as_the_uninterrupted_one(whole, cut, monkeypatch) -> None:
    full_stream = online_run.build_stream
    # the first invocation stops after two tasks of the stream (as if it had been interrupted there)
    monkeypatch.setattr(online_run, "build_stream", lambda config: (lambda s, c: (s, c[:2]))(*full_stream(config)))
    assert main(["online", "rainbow-digits-ftml", *TINY, f"run.dir={cut}"]) == 0
    assert results(cut)["tasks_done"] == 2
    monkeypatch.setattr(online_run, "build_stream", full_stream)
    assert main(["online", str(cut), "--resume"]) == 0
    assert results(cut)["methods"].keys() == results(whole)["methods"].keys()
    for method in ("ftml", "tfs"):  # the same datapoints, updates and accuracies, task by task
        assert results(cut)["methods"][method]["tasks"] == results(whole)["methods"][method]["tasks"]
    assert main(["online", str(cut), "--resume", "online.per_stage=2"]) == 1  # another stream: refused


def test_online_and_train_recipes_point_to_each_other(tmp_path, capsys):
    assert main(["train", "rainbow-digits-ftml", f"run.dir={tmp_path / 'a'}"]) == 1
    assert "metalab online rainbow-digits-ftml" in capsys.readouterr().err
    assert main(["online", "sinusoid-maml-5shot", f"run.dir={tmp_path / 'b'}"]) == 1
    assert "metalab train sinusoid-maml-5shot" in capsys.readouterr().err
    assert main(["show", "sinusoid-maml-5shot", "online.target=0.5"]) == 1  # no online section outside online recipes
    assert main(["online", "rainbow-digits-ftml", "online.methods=[sgd]", f"run.dir={tmp_path / 'c'}"]) == 1
    assert "online.methods" in capsys.readouterr().err


@pytest.mark.parametrize("override", ["online.arrival=0", "online.per_stage=0", "data.dataset=omniglot"])
def test_bad_online_settings_are_named(override, capsys):
    assert main(["online", "rainbow-digits-ftml", override]) == 1
    assert override.split("=")[0] in capsys.readouterr().err
