"""What the `metalab` command says: what was not found, which checkpoint it uses, help for every option,
messages on stderr through `logging` (-q/-v) and results on stdout, predict's folders and its refusal of one
class, eval's speed and memory figures, plots of classification runs, a closed pipe."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from metalab.cli import main, parser
from testdata import make_class_dataset, tiny_run, write_image_folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Class folders and two trained runs: "validated" (best.pt and last.pt) and "unvalidated" (last.pt only)."""
    root = tmp_path_factory.mktemp("cli-messages")
    folders = {split: write_image_folder(root / split, make_class_dataset(classes=10, items=8, seed=seed))
               for seed, split in enumerate(("train", "val", "test"))}
    return {**folders, "validated": tiny_run(folders, root / "validated"),
            "unvalidated": tiny_run(folders, root / "unvalidated", validate=False)}


def run(capsys, *args: str) -> tuple[int, str, str]:
    """`metalab ARGS` in this process: exit status, stdout, stderr."""
    status = main(list(args))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_version(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0 and capsys.readouterr().out.startswith("metalab 0.1.0 (torch ")


def test_every_command_and_option_has_help():
    top = parser()
    commands = next(action for action in top._actions if isinstance(action, argparse._SubParsersAction))
    listed = {choice.dest: choice.help for choice in commands._choices_actions}
    assert set(listed) == {"recipes", "show", "train", "online", "eval", "predict", "plot", "data", "automl", "nas",
                           "zoo"}
    assert all(listed.values())
    for name, command in [("metalab", top), *commands.choices.items()]:
        for action in command._actions:
            if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                assert action.help, f"{name} {action.option_strings or action.dest} has no help"


@pytest.mark.parametrize("args, message", [
    (["train", "/no/such/run", "--resume"], "no run directory /no/such/run to resume"),
    (["train", "missing.yaml"], "recipe file missing.yaml does not exist"),
    (["train", "no/such/recipe.yml", "--resume"], "recipe file no/such/recipe.yml does not exist"),
    (["eval", "/no/such/run", "--checkpoint", "/no/such/run/last.pt"],
     "run directory /no/such/run does not exist; --checkpoint /no/such/run/last.pt picks one checkpoint of a run"),
])
def test_what_was_not_found_is_named(capsys, args, message):
    """All of these said "unknown recipe", or (--checkpoint) ignored the run directory."""
    status, out, err = run(capsys, *args)
    assert status == 1 and out == ""
    assert err.startswith(f"metalab: error: {message}") and err.count("\n") == 1


def test_a_checkpoint_given_by_name_is_read_from_the_run(capsys, runs):
    status, out, err = run(capsys, "eval", str(runs["validated"]), "--checkpoint", "last.pt", "--episodes", "3")
    assert status == 0 and f"metalab: scoring {runs['validated'] / 'last.pt'} (step 4, as --checkpoint asked)" in err
    status, out, err = run(capsys, "eval", str(runs["validated"]), "--checkpoint", "other.pt")
    assert status == 1 and "checkpoint other.pt does not exist (neither as given nor in" in err
    assert "which holds best.pt, last.pt" in err


def test_eval_reports_speed_and_peak_memory(capsys, runs):
    status, out, err = run(capsys, "eval", str(runs["validated"]), "--episodes", "6", "--json")
    summary = json.loads(out)
    assert summary["episodes"] == 6 and summary["episodes_per_second"] > 0
    assert summary["peak_memory_mb"] > 50  # at least what torch itself takes
    assert summary["checkpoint"] == str(runs["validated"] / "best.pt") and summary["episodes_per_batch"] == 20
    status, out, err = run(capsys, "eval", str(runs["validated"]), "--episodes", "6")
    assert " episodes/s, peak memory " in out and out.rstrip().endswith("MB]")


def test_a_manifest_that_is_a_list_is_one_line_naming_the_file(capsys, runs, tmp_path):
    manifest = tmp_path / "m.json"
    manifest.write_text("[1, 2]")
    status, out, err = run(capsys, "eval", str(runs["validated"]), "--manifest", str(manifest))
    last = err.splitlines()[-1]
    assert status == 1 and "Traceback" not in err
    assert last.startswith(f"metalab: error: episode manifest {manifest} holds a list, not the JSON object")
    status, out, err = run(capsys, "eval", str(runs["validated"]), "--manifest", str(manifest), "--ways", "3")
    assert status == 1 and "--manifest" in err and "fixes the episodes, so --ways would be ignored" in err


def test_predict_takes_folders_and_files_and_says_which_checkpoint(capsys, runs, tmp_path):
    test = runs["test"]
    classes = sorted(p.name for p in test.iterdir())
    support = tmp_path / "support"
    for name in classes[:3]:
        (support / name).mkdir(parents=True)
        for image in sorted((test / name).iterdir())[:2]:
            (support / name / image.name).write_bytes(image.read_bytes())
    folder, other = test / classes[0], sorted((test / classes[1]).iterdir())[-1]
    status, out, err = run(capsys, "predict", str(runs["unvalidated"]), "--support", str(support),
                           "--query", str(folder), str(other), "--query", str(test / classes[2]), "--json")
    rows = json.loads(out)
    expected = [*sorted(folder.iterdir()), other, *sorted((test / classes[2]).iterdir())]
    assert [row["query"] for row in rows] == [str(path) for path in expected]  # "image files do not exist" before
    assert all(row["class"] in classes[:3] for row in rows)
    assert err == (f"metalab: predicting with {runs['unvalidated'] / 'last.pt'} (step 4, the last one: the run has no "
                   f"best.pt, it was trained without validation (train.val_every=0 or eval.val_episodes=0); "
                   f"--checkpoint picks another)\n")
    status, out, err = run(capsys, "predict", str(runs["validated"]), "--support", str(support), "--query", str(other))
    assert "the best validation score" in err
    status, quiet_out, quiet_err = run(capsys, "-q", "predict", str(runs["validated"]), "--support", str(support),
                                       "--query", str(other))
    assert quiet_err == "" and quiet_out == out  # -q: the results, without the messages


def test_predict_refuses_a_single_support_class(capsys, runs, tmp_path):
    """It answered "probability 1.000" for every query."""
    single = tmp_path / "support" / "only"
    single.mkdir(parents=True)
    image = sorted((runs["test"] / sorted(os.listdir(runs["test"]))[0]).iterdir())[0]
    (single / image.name).write_bytes(image.read_bytes())
    status, out, err = run(capsys, "predict", str(runs["validated"]), "--support", str(single.parent),
                           "--query", str(image))
    assert status == 1 and out == ""
    assert "holds one class ('only'): an episode needs at least two classes" in err


def test_a_query_folder_without_images_is_named(capsys, runs, tmp_path):
    status, out, err = run(capsys, "predict", str(runs["validated"]), "--support", str(runs["test"]),
                           "--query", str(tmp_path))
    assert status == 1 and f"metalab: error: folder {tmp_path} holds no images" in err


def test_plot_draws_the_learning_curves_of_a_classification_run(capsys, runs, tmp_path):
    """It said that only regression runs have a plot."""
    out_path = tmp_path / "curves.png"
    status, out, err = run(capsys, "plot", str(runs["validated"]), "--out", str(out_path))
    assert status == 0 and out.strip() == str(out_path)
    with Image.open(out_path) as image:
        assert image.format == "PNG" and image.width > 1.5 * image.height  # two panels side by side


def test_train_says_what_it_prepares_and_prints_its_results_on_stdout(capsys, runs, tmp_path):
    status, out, err = run(capsys, "train", "omniglot-protonet-5w1s", "data.dataset=folder",
                           f"data.train_split={runs['train']}", f"data.val_split={runs['val']}",
                           f"data.test_split={runs['test']}", "data.invert_user_images=false", "task.ways=5",
                           "task.queries=2", "learner.hidden=8", "train.steps=2", "eval.episodes=4", "eval.queries=3",
                           "eval.val_episodes=2", "train.progress=false", "speed.threads=1",
                           f"run.dir={tmp_path / 'run'}")
    assert status == 0 and "test (" in out and "metalab:" not in out
    assert f"metalab: loading folder {runs['train']} and building protonet" in err


def test_a_closed_pipe_ends_quietly():
    """`metalab recipes | head -1` ended with a BrokenPipeError traceback."""
    process = subprocess.Popen([sys.executable, "-m", "metalab", "recipes"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    process.stdout.close()  # the reader is gone before the first line
    error = process.stderr.read().decode()
    assert process.wait() == 141 and error == ""


@pytest.mark.parametrize("override, message", [
    ("data.channels=3", "was trained on inputs of shape (1, 28, 28) but the episodes of"),
    ("data.image_size=20", "are (1, 20, 20): drop the overrides of data.image_size or data.channels"),
])
def test_eval_refuses_data_overrides_that_change_the_inputs(capsys, runs, override, message):
    """data.channels=3 raised a convolution's RuntimeError; data.image_size=20 scored 28-pixel weights on 20 pixels."""
    status, out, err = run(capsys, "eval", str(runs["validated"]), override, "--episodes", "2")
    assert status == 1 and out == "" and message in err.splitlines()[-1]


def test_eval_overrides_that_build_a_learner_too_large_for_memory_are_named(capsys, runs, monkeypatch):
    """learner.hidden=100000 ended in the CPU allocator's RuntimeError (here the allocator's answer is simulated:
    some machines would try to allocate the 360 GB)."""
    import metalab.train.build

    def allocate(config, input_shape):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 360000000000 bytes. Error code 12 (Cannot allocate memory)")

    monkeypatch.setattr(metalab.train.build, "build_learner", allocate)
    status, out, err = run(capsys, "eval", str(runs["validated"]), "learner.hidden=100000")
    assert status == 1 and err == ("metalab: error: the overrides learner.hidden=100000 build a learner too large for "
                                   "memory (can't allocate memory: you tried to allocate 360000000000 bytes); only "
                                   "options that keep the trained weights' shapes apply to a trained run\n")


def test_verbose_adds_debug_messages_and_the_traceback_of_an_error(capsys, runs):
    status, out, err = run(capsys, "eval", str(runs["validated"]), "--ways", "11", "-v")
    assert status == 1 and "Traceback (most recent call last)" in err and "raise ValueError(" in err
    assert "metalab: 10 episodes, 20 per forward pass (speed.eval_batch=20" not in err  # it failed before
    status, out, err = run(capsys, "-v", "eval", str(runs["validated"]))
    assert status == 0 and "metalab: 10 episodes, 20 per forward pass (speed.eval_batch=20, --batch=None, " \
                           "speed.eval_images=1600)" in err
    status, out, err = run(capsys, "eval", str(runs["validated"]), "--ways", "11")
    assert status == 1 and "Traceback" not in err
