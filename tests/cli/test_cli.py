"""CLI smoke test as a user runs it: recipes, train a few steps, eval (JSON, manifests), predict, data."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from testdata import SHARED_DATA


def metalab(*args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    result = subprocess.run([sys.executable, "-m", "metalab", *args], capture_output=True, text=True, cwd=cwd, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"metalab {' '.join(args)} failed ({result.returncode}):\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


def folder_overrides(folders: dict[str, Path], run_dir: Path) -> list[str]:
    return [
        "data.dataset=folder", f"data.train_split={folders['train']}", f"data.val_split={folders['val']}",
        f"data.test_split={folders['test']}", "data.invert_user_images=false", "data.image_size=28", "data.channels=1",
        "task.ways=5", "task.queries=2", "learner.hidden=8", "train.steps=4", "train.val_every=2",
        "train.log_every=1", "eval.episodes=20", "eval.val_episodes=10", "eval.queries=3", "train.progress=false",
        f"run.dir={run_dir}",
    ]


def test_recipes_lists_protonet():
    out = metalab("recipes").stdout
    assert "omniglot-protonet-5w1s" in out and "omniglot-protonet-20w5s" in out


def test_train_eval_predict_end_to_end(image_folders, tmp_path):
    run = tmp_path / "run"
    trained = metalab("train", "omniglot-protonet-5w1s", *folder_overrides(image_folders, run))
    assert "test (" in trained.stdout and "accuracy" in trained.stdout
    assert json.loads((run / "results.json").read_text())["test"]["episodes"] == 20

    manifest = tmp_path / "episodes.json"
    scored = json.loads(metalab("eval", str(run), "--ways", "3", "--shots", "2", "--episodes", "30", "--seed", "5",
                                "--json", "--save-manifest", str(manifest)).stdout)
    assert {"accuracy", "ci95", "episodes", "ways", "shots", "queries", "seed"} <= set(scored)
    assert (scored["episodes"], scored["ways"], scored["shots"], scored["seed"]) == (30, 3, 2, 5)
    again = json.loads(metalab("eval", str(run), "--manifest", str(manifest), "--json").stdout)
    assert again["accuracy"] == scored["accuracy"] and again["episodes"] == 30

    support = image_folders["test"]
    classes = sorted(p.name for p in support.iterdir())[:3]
    support_dir = tmp_path / "support"
    queries = []
    for name in classes:
        (support_dir / name).mkdir(parents=True)
        images = sorted((support / name).iterdir())
        for image in images[:2]:
            (support_dir / name / image.name).write_bytes(image.read_bytes())
        queries.append(images[-1])
    predicted = metalab("predict", str(run), "--support", str(support_dir), "--query", *map(str, queries), "--json")
    rows = json.loads(predicted.stdout)
    assert [row["query"] for row in rows] == [str(q) for q in queries]
    assert all(row["class"] in classes for row in rows)
    plain = metalab("predict", str(run), "--support", str(support_dir), "--query", str(queries[0])).stdout
    assert plain.split("\t")[1] in classes


def test_eval_without_flags_scores_the_episodes_that_training_tested(image_folders, tmp_path):
    """The test at the end of training and `metalab eval RUN` build their episodes with one function
    (metalab.data.sources.evaluation_episodes), so they score the same episodes: the same numbers."""
    run = tmp_path / "run"
    metalab("train", "omniglot-protonet-5w1s", *folder_overrides(image_folders, run))
    tested = json.loads((run / "results.json").read_text())["test"]
    scored = json.loads(metalab("eval", str(run), "--json").stdout)
    timing = {"seconds", "episodes_per_second"}
    assert {key: scored[key] for key in set(tested) - timing} == {key: tested[key] for key in set(tested) - timing}
    other_seed = json.loads(metalab("eval", str(run), "--seed", "1", "--json").stdout)  # the comparison can fail
    assert (other_seed["accuracy"], other_seed["ci95"]) != (tested["accuracy"], tested["ci95"])


def test_resume_from_run_dir(image_folders, tmp_path):
    run = tmp_path / "run"
    metalab("train", "omniglot-protonet-5w1s", *folder_overrides(image_folders, run))
    refused = metalab("train", "omniglot-protonet-5w1s", *folder_overrides(image_folders, run), check=False)
    assert refused.returncode == 1 and "--resume" in refused.stderr
    metalab("train", str(run), "--resume", "train.steps=6")
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 6


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "omniglot-protonet-5w1x"], "unknown recipe"),
        (["train", "omniglot-protonet-5w1s", "train.stepz=3"], "Did you mean 'train.steps'"),
        (["eval", "does-not-exist"], "does not exist"),
        (["train", "omniglot-protonet-5w1s", "--data-root", "/nonexistent/metalab-data"],
         "metalab data --download omniglot"),
        (["data", "--download", "miniimagenet"], "mini-ImageNet cannot be downloaded automatically"),
        (["data", "--download", "imagenet"], "the downloadable ones are 'omniglot', 'cifar100', 'cub'"),
    ],
)
def test_errors_are_one_clear_line(args, message, tmp_path):
    extra = {"train": "run.dir=" + str(tmp_path / "r"), "eval": "--json", "data": f"--data-root={tmp_path}"}[args[0]]
    result = metalab(*args, extra, check=False)
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("flag, value", [("--episodes", "0"), ("--ways", "0"), ("--shots", "-1"),
                                         ("--queries", "0"), ("--batch", "x")])
def test_eval_counts_below_one_are_usage_errors(flag, value):
    """They were taken as 'not given' (0 episodes scored the recipe's 1000) or scored NaN (0 queries)."""
    result = metalab("eval", "does-not-matter", flag, value, check=False)
    assert result.returncode == 2
    assert f"argument {flag}: must be an integer >= 1, got" in result.stderr and "Traceback" not in result.stderr


def test_train_count_of_zero_names_the_key(tmp_path):
    result = metalab("train", "sinusoid-maml-5shot", "task.meta_batch=0", f"run.dir={tmp_path / 'r'}", check=False)
    assert result.returncode == 1
    assert "task.meta_batch must be >= 1 (tasks per meta-iteration), got 0" in result.stderr


def test_more_ways_than_classes_is_a_clear_error(image_folders, tmp_path):
    result = metalab("train", "omniglot-protonet-5w1s", *folder_overrides(image_folders, tmp_path / "r"),
                     "task.ways=11", check=False)
    assert result.returncode == 1 and "11-way episodes need 11 classes" in result.stderr


def test_data_command_reports_what_is_found(tmp_path):
    report = metalab("data", "--data-root", str(tmp_path)).stdout
    assert "omniglot" in report.lower() and "metalab data --download omniglot" in report
    if SHARED_DATA.exists():
        found = metalab("data", "--data-root", str(SHARED_DATA)).stdout
        assert "images_background.zip" in found


@pytest.mark.skipif(not (SHARED_DATA / "omniglot" / "images_background_small1.zip").exists(),
                    reason="needs the official small Omniglot archives (../shared/data/omniglot)")
def test_omniglot_run_scored_within_alphabets(tmp_path):
    """A real Omniglot run (small official archives), scored on Lake splits inside one alphabet."""
    run = tmp_path / "run"
    metalab("train", "omniglot-protonet-5w1s", f"--data-root={SHARED_DATA}", "data.train_split=lake-background-small1",
            "data.val_split=lake-background-small2", "data.test_split=lake-background-small2", "task.ways=10",
            "learner.hidden=16", "train.steps=3", "train.val_every=3", "eval.val_episodes=10", "eval.episodes=20",
            "train.progress=false", f"run.dir={run}")
    result = json.loads(metalab("eval", str(run), "--data-root", str(SHARED_DATA), "--split", "lake-background-small2",
                                "--within-group", "--ways", "5", "--episodes", "20", "--json").stdout)
    assert result["split"] == "lake-background-small2" and result["episodes"] == 20 and result["ways"] == 5
    manifest = tmp_path / "m.json"
    metalab("eval", str(run), "--data-root", str(SHARED_DATA), "--split", "lake-background-small2", "--within-group",
            "--episodes", "20", "--save-manifest", str(manifest))
    episodes = json.loads(manifest.read_text())["episodes"]
    assert all(len({name.split("/")[0] for name in e["classes"]}) == 1 for e in episodes)
