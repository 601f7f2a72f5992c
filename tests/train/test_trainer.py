"""Trainer: exact resume, best-checkpoint selection, NaN stop keeping the last good checkpoint."""
from __future__ import annotations

import json

import pytest
import torch
from omegaconf import DictConfig

from metalab.config import compose, load_recipe
from metalab.train.checkpoint import load_checkpoint
from metalab.train.trainer import NonFiniteLossError, RunExistsError, Trainer


def folder_config(folders, run_dir, steps=6, **extra) -> DictConfig:
    recipe = {
        "name": "test-protonet",
        "data": {"dataset": "folder", "train_split": str(folders["train"]), "val_split": str(folders["val"]),
                 "test_split": str(folders["test"]), "image_size": 28, "channels": 1},
        "task": {"ways": 5, "shots": 1, "queries": 2, "meta_batch": 2},
        "eval": {"ways": 5, "shots": 1, "queries": 3, "episodes": 20, "val_episodes": 10},
        "speed": {"eval_batch": 10},
        "learner": {"name": "protonet", "hidden": 8},
        "optim": {"lr": 0.01, "lr_step": 3, "lr_gamma": 0.5},
        "train": {"steps": steps, "val_every": 2, "ckpt_every": 2, "log_every": 1, "progress": False},
        "run": {"dir": str(run_dir), "tensorboard": False},
    }
    overrides = [f"{k}={v}" for k, v in extra.items()]
    return compose(recipe, overrides)


def test_fit_writes_checkpoints_logs_and_results(image_folders, tmp_path):
    results = Trainer(folder_config(image_folders, tmp_path / "run", **{"run.tensorboard": True})).fit()
    run = tmp_path / "run"
    assert {"last.pt", "best.pt", "config.yaml", "metrics.jsonl", "results.json"} <= {p.name for p in run.iterdir()}
    assert any((run / "tensorboard").iterdir())
    saved = json.loads((run / "results.json").read_text())
    assert saved == json.loads(json.dumps(results))
    assert saved["test"]["episodes"] == 20 and 0.0 <= saved["test"]["accuracy"] <= 1.0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "val"] == [2, 4, 6]
    best = max((r for r in records if r["kind"] == "val"), key=lambda r: r["accuracy"])
    assert load_checkpoint(run / "best.pt")["step"] == best["step"] == saved["best_val"]["step"]
    state = load_checkpoint(run / "last.pt")
    assert state["step"] == 6 and {"model", "optimizer", "scheduler", "torch_rng", "config"} <= set(state)


def test_resume_continues_exactly(image_folders, tmp_path):
    Trainer(folder_config(image_folders, tmp_path / "straight", steps=6)).fit()
    Trainer(folder_config(image_folders, tmp_path / "split", steps=3)).fit()
    Trainer(folder_config(image_folders, tmp_path / "split", steps=6), resume=True).fit()
    straight = load_checkpoint(tmp_path / "straight" / "last.pt")
    resumed = load_checkpoint(tmp_path / "split" / "last.pt")
    for name, tensor in straight["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), name
    assert straight["optimizer"]["state"].keys() == resumed["optimizer"]["state"].keys()
    for key, state in straight["optimizer"]["state"].items():
        assert torch.equal(state["exp_avg"], resumed["optimizer"]["state"][key]["exp_avg"])
    steps = [json.loads(line)["step"] for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["kind"] == "train"]
    assert steps == [1, 2, 3, 4, 5, 6]  # the logs of the resumed run read like one run


def test_results_record_the_torch_version_threads_and_processes_that_computed_them(image_folders, tmp_path,
                                                                                   one_thread):
    """speed.threads changes float rounding, so results.json says what computed each stretch of a run."""
    Trainer(folder_config(image_folders, tmp_path / "run", steps=2, **{"speed.threads": 1})).fit()
    Trainer(folder_config(image_folders, tmp_path / "run", steps=4, **{"speed.threads": 1}), resume=True).fit()
    Trainer(folder_config(image_folders, tmp_path / "run", steps=6, **{"speed.threads": 2}), resume=True).fit()
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["computed_with"] == [
        {"from_step": 0, "torch": torch.__version__, "threads": 1, "processes": 1},
        {"from_step": 4, "torch": torch.__version__, "threads": 2, "processes": 1},
    ]


def test_existing_run_is_not_overwritten(image_folders, tmp_path):
    Trainer(folder_config(image_folders, tmp_path / "run", steps=2)).fit()
    before = (tmp_path / "run" / "last.pt").read_bytes()
    with pytest.raises(RunExistsError, match="--resume"):
        Trainer(folder_config(image_folders, tmp_path / "run", steps=2)).fit()
    assert (tmp_path / "run" / "last.pt").read_bytes() == before


def test_resume_without_checkpoint_is_a_clear_error(image_folders, tmp_path):
    with pytest.raises(FileNotFoundError, match="cannot resume"):
        Trainer(folder_config(image_folders, tmp_path / "none"), resume=True).fit()


def test_resume_with_overrides_that_change_the_network_names_them(image_folders, tmp_path):
    Trainer(folder_config(image_folders, tmp_path / "run", steps=2)).fit()
    changed = folder_config(image_folders, tmp_path / "run", steps=4, **{"learner.hidden": 4})
    with pytest.raises(ValueError,
                       match=r"last.pt does not fit .*learner options: learner.hidden: 8 -> 4. Drop the ones"):
        Trainer(changed, resume=True).fit()


def test_nan_loss_stops_and_keeps_last_good_checkpoint(image_folders, tmp_path, monkeypatch):
    trainer = Trainer(folder_config(image_folders, tmp_path / "run", steps=8))
    original = trainer.train_step

    def poisoned(step):
        if step == 5:  # the 6th step's loss is NaN
            with torch.no_grad():
                for p in trainer.learner.parameters():
                    p.fill_(float("nan"))
        return original(step)

    monkeypatch.setattr(trainer, "train_step", poisoned)
    with pytest.raises(NonFiniteLossError, match="at step 5.*last good checkpoint") as stopped:
        trainer.fit()
    assert "resume with --resume" in str(stopped.value)
    assert "learner.inner_lr" not in str(stopped.value)  # ProtoNet has no inner loop to blame
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["step"] == 4
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())
    assert not list((tmp_path / "run").glob("*.tmp"))


def test_divergence_that_lands_in_batchnorm_buffers_stops_training(image_folders, tmp_path, one_thread):
    """ProtoNet at SGD lr 1e6: the loss stays finite (chance level, log 5) while BatchNorm's running variances
    overflow to inf; training stops as for a NaN loss, naming them, and the last checkpoint holds finite weights."""
    config = folder_config(image_folders, tmp_path / "run", steps=8,
                           **{"optim.name": "sgd", "optim.lr": 1e6, "optim.lr_step": 0, "train.ckpt_every": 1})
    with pytest.raises(NonFiniteLossError, match=r"the weights became non-finite at step \d \(inf or NaN in "
                                                 r"backbone\.blocks\.\d\.1\.running_var.*was still finite\); "
                                                 r"training stopped and the last good checkpoint .* was kept"):
        Trainer(config).fit()
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["step"] < 8 and not (tmp_path / "run" / "results.json").exists()
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())


def test_a_diverging_inner_loop_at_the_first_step_names_the_inner_options(tmp_path):
    """MAML whose inner step overflows: the error points at the inner loop's options, and says honestly that no
    checkpoint exists yet (so there is nothing to resume)."""
    config = load_recipe("sinusoid-maml-5shot", ["learner.inner_lr=1e30", "train.steps=3", "train.progress=false",
                                                 "run.tensorboard=false", f"run.dir={tmp_path / 'run'}"])
    with pytest.raises(NonFiniteLossError) as stopped:
        Trainer(config).fit()
    message = str(stopped.value)
    assert "at step 0" in message and "no checkpoint had been written yet" in message
    assert "learner.inner_lr" in message and "learner.inner_grad_clip" in message
    assert "start the run again" in message and "--resume" not in message
    assert not (tmp_path / "run" / "last.pt").exists()


def test_spent_time_budget_ends_training_with_validation_checkpoint_and_test(image_folders, tmp_path):
    run = tmp_path / "run"
    results = Trainer(folder_config(image_folders, run, steps=6, **{"train.max_minutes": 0})).fit()
    assert results["stopped_by_budget"] and results["steps"] == 1
    assert results["test"]["episodes"] == 20
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "val"] == [1]
    assert load_checkpoint(run / "last.pt")["step"] == 1 and load_checkpoint(run / "best.pt")["step"] == 1
    # the run continues from there to train.steps, as any stopped run
    resumed = Trainer(folder_config(image_folders, run, steps=6), resume=True).fit()
    assert not resumed["stopped_by_budget"] and load_checkpoint(run / "last.pt")["step"] == 6


def test_linearly_annealed_run_resumed_after_its_budget_equals_a_straight_run(image_folders, tmp_path, monkeypatch):
    anneal = {"optim.name": "sgd", "optim.lr_step": 0, "optim.lr_final": 0.0}
    used = []
    original_step = torch.optim.SGD.step

    def recording_step(self, *args, **kwargs):
        used.append(self.param_groups[0]["lr"])
        return original_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", recording_step)
    Trainer(folder_config(image_folders, tmp_path / "straight", steps=4, **anneal)).fit()
    assert used == pytest.approx([0.01, 0.0075, 0.005, 0.0025])  # lr * (1 - i / steps), the last step lr / steps
    Trainer(folder_config(image_folders, tmp_path / "split", steps=4, **anneal, **{"train.max_minutes": 0})).fit()
    Trainer(folder_config(image_folders, tmp_path / "split", steps=4, **anneal), resume=True).fit()
    assert used[4:] == used[:4]
    expected = load_checkpoint(tmp_path / "straight" / "last.pt")["model"]
    resumed = load_checkpoint(tmp_path / "split" / "last.pt")["model"]
    for name, tensor in expected.items():
        assert torch.equal(tensor, resumed[name]), name
