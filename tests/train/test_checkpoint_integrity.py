"""Damaged checkpoints are refused with what to do, never used: a flipped conv weight in best.pt does not give
an accuracy, damaged optimiser moments in last.pt do not pass for a diverging run on --resume. Checkpoints
written before checksums existed load unchecked (tests/train/test_runs_written_before_the_speed_group.py)."""
from __future__ import annotations

import io
import zipfile

import pytest
import torch

from metalab.cli import main
from metalab.train.checkpoint import load_checkpoint
from metalab.train.trainer import Trainer
from test_trainer import folder_config
from testdata import damage_stored_tensor


@pytest.fixture
def run(image_folders, tmp_path, one_thread):
    """A 2-step ProtoNet run with 64-channel convolutions (a conv weight of 147 kB), best.pt and last.pt."""
    Trainer(folder_config(image_folders, tmp_path / "run", steps=2, **{"learner.hidden": 64})).fit()
    return tmp_path / "run"


def test_a_damaged_best_checkpoint_is_refused_by_eval_naming_the_other(run, capsys):
    weight = load_checkpoint(run / "best.pt")["model"]["backbone.blocks.1.0.weight"]
    damage_stored_tensor(run / "best.pt", weight)
    unchecked = torch.load(io.BytesIO((run / "best.pt").read_bytes()), weights_only=False)["model"]
    assert not torch.equal(unchecked["backbone.blocks.1.0.weight"], weight)  # still loads, with other weights

    assert main(["eval", str(run), "--episodes", "5"]) == 1
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0
    assert f"{run / 'best.pt'} is damaged: its content no longer matches the SHA-256" in error
    assert f"--checkpoint {run / 'last.pt'}" in error and "train again" in error
    assert main(["eval", str(run), "--episodes", "5", "--checkpoint", str(run / "last.pt")]) == 0


def test_damaged_optimiser_moments_stop_resume_before_training(run, capsys):
    state = load_checkpoint(run / "last.pt")
    moments = max((s["exp_avg_sq"] for s in state["optimizer"]["state"].values()), key=torch.Tensor.numel)
    damage_stored_tensor(run / "last.pt", moments, fill=b"\xff")  # NaNs: today's --resume blamed optim.lr for them
    before = (run / "last.pt").read_bytes()

    assert main(["train", str(run), "--resume", "train.steps=4", "train.progress=false"]) == 1
    error = capsys.readouterr().err
    assert f"{run / 'last.pt'} is damaged" in error and "nan" not in error and "optim.lr" not in error
    assert f"copy it over {run / 'last.pt'}" in error  # resume from best.pt's step instead
    assert (run / "last.pt").read_bytes() == before and not (run / "train.lock").exists()


def test_checkpoints_carry_their_checksum_and_stay_plain_torch_files(run):
    for name in ("last.pt", "best.pt"):
        assert zipfile.ZipFile(run / name).comment.startswith(b"metalab-sha256:")
        assert torch.load(run / name, weights_only=False)["step"] == 2
