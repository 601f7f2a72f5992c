"""End to end through the CLI for every model-based learner: a few training steps, `metalab eval`
on fixed episodes, `metalab predict` on a folder of the user's own images (classifiers), and the
NP plot (regression)."""
from __future__ import annotations

import json
import shutil

import pytest

from metalab.cli import main

FAST = ["train.steps=2", "train.val_every=2", "train.ckpt_every=2", "train.log_every=1", "train.progress=false",
        "speed.threads=1", "run.tensorboard=false", "eval.episodes=3", "eval.val_episodes=2", "speed.eval_batch=3"]

CLASSIFIERS = {
    "omniglot-mann-5w1s": ["learner.controller_size=16", "learner.memory_slots=8", "learner.memory_size=4"],
    "omniglot-metanet-5w1s": ["learner.hidden=8", "learner.base_hidden=8", "learner.key_size=8"],
    "omniglot-snail-5w1s": ["learner.hidden=8", "learner.filters=8"],
    "omniglot-hypernet-5w1s": ["learner.hidden=8", "learner.set_size=16"],
    "omniglot-blackbox-5w1s": ["learner.hidden=8", "learner.lstm_size=16"],
    "omniglot-cnp-5w1s": ["learner.hidden=8", "learner.representation_size=16", "learner.decoder_size=16"],
}


@pytest.mark.parametrize("recipe", sorted(CLASSIFIERS))
def test_train_eval_predict_on_image_folders(recipe, image_folders, tmp_path, capsys):
    run = tmp_path / "run"
    data = ["data.dataset=folder", f"data.train_split={image_folders['train']}",
            f"data.val_split={image_folders['val']}",
            f"data.test_split={image_folders['test']}", "data.invert_user_images=false"]
    small = ["task.queries=3", "task.meta_batch=2", "eval.queries=3", *CLASSIFIERS[recipe]]
    assert main(["train", recipe, f"run.dir={run}", *data, *small, *FAST]) == 0
    assert json.loads((run / "results.json").read_text())["test"]["episodes"] == 3
    capsys.readouterr()
    assert main(["eval", str(run), "--ways", "5", "--shots", "1", "--queries", "2", "--episodes", "4", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["episodes"] == 4 and 0.0 <= result["accuracy"] <= 1.0
    # the user's own support folder: 3 classes (fewer ways than trained), unequal shots
    support = tmp_path / "support"
    classes = sorted(p for p in image_folders["test"].iterdir() if p.is_dir())[:3]
    for shots, folder in zip((1, 2, 3), classes):
        (support / folder.name).mkdir(parents=True)
        for image in sorted(folder.glob("*.png"))[:shots]:
            shutil.copy(image, support / folder.name / image.name)
    queries = [sorted(folder.glob("*.png"))[-1] for folder in classes]
    assert main(["predict", str(run), "--support", str(support), "--query", *map(str, queries), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["query"] for row in rows] == [str(q) for q in queries]
    assert all(row["class"] in {c.name for c in classes} and 0 < row["probability"] <= 1 for row in rows)


def test_predict_with_more_classes_than_the_learner_was_built_for_is_a_clear_error(image_folders, tmp_path, capsys):
    run = tmp_path / "run"
    data = ["data.dataset=folder", f"data.train_split={image_folders['train']}",
            f"data.val_split={image_folders['val']}",
            f"data.test_split={image_folders['test']}"]
    assert main(["train", "omniglot-snail-5w1s", f"run.dir={run}", *data, "task.queries=2", "task.meta_batch=1",
                 "eval.queries=2", "learner.hidden=8", "learner.filters=8", *FAST]) == 0
    query = next(image_folders["test"].glob("*/*.png"))
    assert main(["predict", str(run), "--support", str(image_folders["test"]), "--query", str(query)]) == 1
    assert "at most 5 ways (learner.max_ways)" in capsys.readouterr().err


@pytest.mark.parametrize("recipe", ["sinusoid-cnp-10shot", "sinusoid-np-10shot", "gp-np-5shot"])
def test_neural_process_train_eval_and_plot(recipe, tmp_path, capsys):
    run = tmp_path / "run"
    small = ["learner.hidden=16", "learner.representation_size=16", "eval.queries=5", "task.meta_batch=4"]
    assert main(["train", recipe, f"run.dir={run}", *small, *FAST]) == 0
    capsys.readouterr()
    assert main(["eval", str(run), "--episodes", "5", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["metric"] == "mse" and result["episodes"] == 5 and result["mse"] >= 0
    capsys.readouterr()
    assert main(["plot", str(run), "--out", str(tmp_path / "plot.png"), "--tasks", "2"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "plot.png")
    assert (tmp_path / "plot.png").stat().st_size > 1000
