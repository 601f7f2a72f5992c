"""The run directory between trainers: one trainer at a time (a lock naming its holder, taken over when its holder
was killed), the files of a run that stopped before its first checkpoint moved aside, and the temporary files of
an interrupted write removed."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from metalab.cli import main
from metalab.train.checkpoint import load_checkpoint
from metalab.train.run_lock import RunLockedError
from metalab.train.trainer import NonFiniteLossError, Trainer
from test_trainer import folder_config


@pytest.fixture
def lock_holder():
    """Start a separate process that takes a run directory's lock and keeps it until killed."""
    started = []

    def start(run_dir):
        code = textwrap.dedent("""
            import sys, time
            from pathlib import Path
            from metalab.train.run_lock import run_lock
            with run_lock(Path(sys.argv[1])):
                print("held", flush=True)
                time.sleep(600)
        """)
        process = subprocess.Popen([sys.executable, "-c", code, str(run_dir)], stdout=subprocess.PIPE, text=True)
        started.append(process)
        assert process.stdout.readline().strip() == "held"
        return process

    yield start
    for process in started:
        process.kill()
        process.wait()


def test_a_second_trainer_is_refused_naming_the_holder_while_eval_may_read(image_folders, tmp_path, lock_holder,
                                                                           capsys, one_thread):
    run = tmp_path / "run"
    Trainer(folder_config(image_folders, run, steps=2)).fit()
    assert not (run / "train.lock").exists()  # released at the end
    holder = lock_holder(run)
    before = (run / "last.pt").read_bytes()
    holds = rf"{run} is being trained by pid {holder.pid} on host {socket.gethostname()} \(it holds {run}/train.lock\)"
    with pytest.raises(RunLockedError, match=holds + r"; one trainer per run.dir"):
        Trainer(folder_config(image_folders, run, steps=4), resume=True).fit()
    with pytest.raises(RunLockedError, match=holds):
        Trainer(folder_config(image_folders, run, steps=4)).fit()
    assert (run / "last.pt").read_bytes() == before
    capsys.readouterr()
    assert main(["eval", str(run), "--episodes", "3"]) == 0  # reading a run in training is allowed
    assert main(["train", str(run), "--resume", "train.steps=4", "train.progress=false"]) == 1
    assert f"pid {holder.pid}" in capsys.readouterr().err


def test_the_lock_of_a_killed_trainer_is_taken_over_with_a_message(image_folders, tmp_path, lock_holder, capsys,
                                                                   one_thread):
    run = tmp_path / "run"
    holder = lock_holder(run)
    holder.kill()
    holder.wait()
    assert json.loads((run / "train.lock").read_text()) == {"pid": holder.pid, "host": socket.gethostname()}
    Trainer(folder_config(image_folders, run, steps=2)).fit()
    assert (f"metalab: {run}/train.lock was left by pid {holder.pid} on host {socket.gethostname()}, which stopped "
            f"without releasing it (killed?); taking it over") in capsys.readouterr().err
    assert load_checkpoint(run / "last.pt")["step"] == 2 and not (run / "train.lock").exists()


def test_the_lock_is_released_when_training_fails(image_folders, tmp_path, monkeypatch, one_thread):
    run = tmp_path / "run"
    trainer = Trainer(folder_config(image_folders, run, steps=4))
    monkeypatch.setattr(trainer, "_non_finite_weights", lambda: ["backbone.blocks.0.1.running_var"])
    with pytest.raises(NonFiniteLossError):
        trainer.fit()
    assert not (run / "train.lock").exists()


def test_a_run_stopped_before_its_first_checkpoint_is_moved_aside(image_folders, tmp_path, monkeypatch, capsys,
                                                                  one_thread):
    run = tmp_path / "run"
    stopped = Trainer(folder_config(image_folders, run, steps=4))
    original = stopped.train_step

    def killed_at_step_1(step):
        if step == 1:
            raise KeyboardInterrupt
        return original(step)

    monkeypatch.setattr(stopped, "train_step", killed_at_step_1)
    with pytest.raises(KeyboardInterrupt):
        stopped.fit()
    old_log = (run / "metrics.jsonl").read_text()
    assert [json.loads(line)["step"] for line in old_log.splitlines()] == [1] and not (run / "last.pt").exists()

    with pytest.raises(FileNotFoundError, match=rf"cannot resume: {run} holds config.yaml, metrics.jsonl but no "
                                                r"last.pt: its run stopped before its first checkpoint"):
        Trainer(folder_config(image_folders, run, steps=4), resume=True).fit()
    capsys.readouterr()
    Trainer(folder_config(image_folders, run, steps=4)).fit()
    aside = run / "stopped-before-checkpoint-1"
    assert (f"metalab: {run} held config.yaml, metrics.jsonl of a run that stopped before its first checkpoint; "
            f"moved them to {aside}") in capsys.readouterr().err
    assert (aside / "metrics.jsonl").read_text() == old_log and (aside / "config.yaml").is_file()
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["kind"] == "train"]
    assert steps == [1, 2, 3, 4]  # the new run's history alone


def test_temporary_files_of_an_interrupted_write_are_removed_and_nothing_else(image_folders, tmp_path, capsys,
                                                                              one_thread):
    run = tmp_path / "run"
    Trainer(folder_config(image_folders, run, steps=2)).fit()
    stale = [run / ".last.pt.x1_9abcd.tmp", run / ".best.pt.0123abcd.tmp", run / ".metrics.jsonl.zzzzzzzz.tmp"]
    kept = [run / ".notes.txt.abcdefgh.tmp", run / "last.pt.abcdefgh.tmp", run / ".last.pt.abc.tmp",
            run / "my.last.pt.abcdefgh.tmp"]
    for path in stale + kept:
        path.write_bytes(b"half a checkpoint")
    capsys.readouterr()
    Trainer(folder_config(image_folders, run, steps=3), resume=True).fit()
    assert not any(path.exists() for path in stale) and all(path.exists() for path in kept)
    assert (f"metalab: removed 3 temporary file(s) that an interrupted write left in {run}: .best.pt.0123abcd.tmp, "
            f".last.pt.x1_9abcd.tmp, .metrics.jsonl.zzzzzzzz.tmp") in capsys.readouterr().err


def test_a_real_second_trainer_process_is_refused(image_folders, tmp_path, one_thread):
    """Two `metalab train` processes on one run.dir: the one that starts second stops at once, naming the first."""
    run = tmp_path / "run"
    overrides = [
        "data.dataset=folder", f"data.train_split={image_folders['train']}", f"data.val_split={image_folders['val']}",
        f"data.test_split={image_folders['test']}", "data.invert_user_images=false", "data.image_size=28",
        "data.channels=1", "task.ways=5", "task.queries=2", "learner.hidden=8", "train.steps=100000",
        "train.val_every=0", "train.progress=false", "speed.threads=1", "run.tensorboard=false", f"run.dir={run}",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    first = subprocess.Popen([sys.executable, "-m", "metalab", "train", "omniglot-protonet-5w1s", *overrides],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        for _ in range(600):  # the first holds the lock once its record is there
            if (run / "train.lock").is_file() and (run / "train.lock").read_text():
                break
            assert first.poll() is None, first.stderr.read()
            time.sleep(0.1)
        second = subprocess.run([sys.executable, "-m", "metalab", "train", "omniglot-protonet-5w1s", *overrides],
                                capture_output=True, text=True, env=env)
        assert second.returncode == 1
        assert f"{run} is being trained by pid {first.pid} on host {socket.gethostname()}" in second.stderr
        assert first.poll() is None  # the first goes on
    finally:
        first.kill()
        first.wait()
