"""`metalab predict --backbone`: the "good embedding" baseline predicts without a run (a ProtoNet on a library
backbone's embedding, here with weights by path), and a command line that gives both or neither is refused."""
from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from metalab.cli import main
from metalab.nn.backbones import build_backbone
from testdata import make_class_dataset, write_image_folder


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():  # the compatibility warning of a torchvision built for another torch
        warnings.simplefilter("ignore")
        yield


def test_predict_with_a_backbone_and_no_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    weights = tmp_path / "resnet18.pth"
    torch.save(build_backbone("torchvision:resnet18", (3, 32, 32)).model.state_dict(), weights)
    support = write_image_folder(tmp_path / "support", make_class_dataset(classes=3, items=1, size=32), rgb=True)
    classes = sorted(path.name for path in support.iterdir())
    queries = []
    for name in classes:  # each query is its class's one support image: the nearest prototype, at cosine 1
        queries.append(tmp_path / f"query-{name}.png")
        shutil.copy(support / name / "000.png", queries[-1])
    status = main(["predict", "--backbone", f"torchvision:resnet18(weights={weights})", "--image-size", "32",
                   "--support", str(support), "--query", *map(str, queries), "--json"])
    rows = json.loads(capsys.readouterr().out)
    assert status == 0 and [row["class"] for row in rows] == classes
    assert all(1 / 3 < row["probability"] <= 1 for row in rows)
    for arguments in ([str(tmp_path), "--backbone", "torchvision:resnet18"], []):
        status = main(["predict", *arguments, "--support", str(support), "--query", str(queries[0])])
        assert status == 1 and "give a run directory" in capsys.readouterr().err
