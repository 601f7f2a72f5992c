"""End to end through the CLI for one recipe per metric learner: train, eval, predict (tiny data)."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from metalab.cli import main

LEARNER_OVERRIDES = {
    "matching": ["learner.fce=true", "learner.fce_steps=2"],
    "relation": ["learner.hidden=8"],
    "siamese": ["learner.pairs_per_task=16"],
    "gnn": ["learner.ways=3", "learner.graph_features=8"],
    "metaoptnet": ["learner.svm_iterations=200"],
    "r2d2": [],
    "baseline": ["learner.num_classes=10", "task.ways=5"],
    "baselinepp": ["learner.num_classes=10", "task.ways=5"],
}


@pytest.fixture
def support_folder(image_folders, tmp_path):
    """3 classes of the test split, with 2, 1 and 1 examples (unequal shots)."""
    root = tmp_path / "support"
    classes = sorted(p for p in image_folders["test"].iterdir() if p.is_dir())[:3]
    for number, folder in enumerate(classes):
        (root / folder.name).mkdir(parents=True)
        for image in sorted(folder.glob("*.png"))[: 2 if number == 0 else 1]:
            shutil.copy(image, root / folder.name / image.name)
    return root, [sorted(c.glob("*.png"))[-1] for c in classes]


@pytest.mark.parametrize("algorithm", sorted(LEARNER_OVERRIDES))
def test_train_eval_predict(algorithm, image_folders, support_folder, tmp_path, capsys):
    threads = torch.get_num_threads()
    run = tmp_path / "run"
    data = ["data.dataset=folder", f"data.train_split={image_folders['train']}",
            f"data.val_split={image_folders['val']}",
            f"data.test_split={image_folders['test']}", "data.image_size=28", "data.channels=1"]
    small = ["task.ways=3", "task.shots=1", "task.queries=2", "task.meta_batch=1", "eval.ways=3", "eval.shots=1",
             "eval.queries=2", "eval.episodes=4", "eval.val_episodes=2", "speed.eval_batch=2", "train.steps=2",
             "train.val_every=2", "train.log_every=1", "speed.threads=1", "train.progress=false",
             "run.tensorboard=false", f"run.dir={run}"]
    try:
        assert main(["train", f"omniglot-{algorithm}-5w1s", *data, *small, *LEARNER_OVERRIDES[algorithm]]) == 0
        results = json.loads((run / "results.json").read_text())
        assert results["learner"] == algorithm and results["test"]["episodes"] == 4
        capsys.readouterr()
        assert main(["eval", str(run), "--ways", "3", "--shots", "1", "--episodes", "3", "--json"]) == 0
        summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert summary["episodes"] == 3 and summary["ways"] == 3 and 0.0 <= summary["accuracy"] <= 1.0
        support, queries = support_folder
        assert main(["predict", str(run), "--support", str(support), "--query", *map(str, queries), "--json"]) == 0
        rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert len(rows) == 3
        assert all(row["class"] in {p.name for p in support.iterdir()} and 0 < row["probability"] <= 1 for row in rows)
    finally:
        torch.set_num_threads(threads)
