"""Backbones by spec: names and settings parsed or refused by name, WRN-28-10 against its published size, and each
image backbone training one step inside a metric and a gradient learner."""
from __future__ import annotations

import pytest
import torch

from metalab.algorithms.gradient.fomaml import FirstOrderMAML
from metalab.algorithms.metric.protonet import ProtoNet, ProtoNetOptions
from metalab.data.task import Task
from metalab.nn.backbones import build_backbone, embedding_dim, parse_backbone
from metalab.nn.resnet12 import DropBlock2d
from metalab.nn.wide_resnet import WideResNet


@pytest.fixture(autouse=True)
def _float64():
    """Full-width networks run in float32 here (this folder's default, float64, is for exact comparisons)."""
    yield


def test_specs_parse_into_a_name_and_typed_settings() -> None:
    assert parse_backbone("conv4") == ("conv4", {})
    assert parse_backbone(" resnet12( drop_rate=0.1, dropblock_size=5, avg_pool=False ) ") == (
        "resnet12", {"drop_rate": 0.1, "dropblock_size": 5, "avg_pool": False})
    assert parse_backbone("wrn28-10(drop_rate=0.3)") == ("wrn28-10", {"drop_rate": 0.3})


@pytest.mark.parametrize("spec, message", [
    ("vgg16", "unknown backbone 'vgg16'; known: conv4, resnet12, wrn28-10"),
    ("resnet12(dropout=0.1)", "backbone resnet12 has no setting 'dropout'; it takes drop_rate, dropblock_size"),
    ("conv4(drop_rate=0.1)", "backbone conv4 has no setting 'drop_rate'; it takes no settings"),
    ("resnet12(avg_pool=yes)", "backbone resnet12: avg_pool must be bool, got 'yes'"),
    ("resnet12(dropblock_size=2.5)", "backbone resnet12: dropblock_size must be int, got '2.5'"),
    ("resnet12(drop_rate=0.1", "settings go in parentheses"),
])
def test_a_bad_spec_names_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_backbone(spec)


def test_wrn_28_10_has_the_published_size_and_640_features() -> None:
    network = WideResNet()
    # 36.5M in the paper (Zagoruyko & Komodakis 2016, Table 4), counted with its 10-class linear head
    assert sum(p.numel() for p in network.parameters()) + 640 * 10 + 10 == 36_479_194
    assert sum(isinstance(m, torch.nn.Conv2d) for m in network.modules()) == 1 + 3 * 4 * 2 + 3  # 25 + 3 shortcuts
    with pytest.raises(ValueError, match="6n \\+ 4"):
        WideResNet(depth=27)


def test_resnet12_settings_select_metaoptnet_and_rfs_networks() -> None:
    metaoptnet = build_backbone("resnet12(avg_pool=false, drop_rate=0.1, dropblock_size=5)", (3, 84, 84))
    assert embedding_dim(metaoptnet, (3, 84, 84)) == 640 * 5 * 5  # MetaOptNet's 16000 features
    assert sum(isinstance(m, DropBlock2d) for m in metaoptnet.modules()) == 2
    assert embedding_dim(build_backbone("resnet12", (3, 32, 32)), (3, 32, 32)) == 640


def five_way_tasks(size: int) -> Task:
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(5).expand(1, -1)
    return Task(torch.rand(1, 5, 3, size, size, generator=generator), labels,
                torch.rand(1, 5, 3, size, size, generator=generator), labels)


@pytest.mark.parametrize("spec, size", [("wrn28-10", 8), ("resnet12(drop_rate=0.1, dropblock_size=2)", 16)])
def test_an_image_backbone_trains_a_metric_and_a_gradient_learner(spec: str, size: int) -> None:
    torch.manual_seed(0)  # small images keep the full-width networks quick
    shape = (3, size, size)
    for learner in (ProtoNet(ProtoNetOptions(backbone=spec), shape),
                    FirstOrderMAML(FirstOrderMAML.Options(backbone=spec, inner_steps=1, inner_lr=0.01), shape)):
        learner.zero_grad()
        metrics = learner.meta_step(five_way_tasks(size))
        assert torch.isfinite(metrics["loss"])
        parameters = dict(learner.named_parameters())
        reached = [n for n, p in parameters.items() if p.grad is not None and bool(p.grad.abs().sum() > 0)]
        assert len(reached) > 0.9 * len(parameters), f"{type(learner).__name__} with {spec}: few parameters learn"


def test_the_gradient_family_names_mlp_beside_the_image_backbones() -> None:
    with pytest.raises(ValueError, match="learner.backbone: unknown backbone 'cnn'.*or 'mlp' for vectors"):
        FirstOrderMAML(FirstOrderMAML.Options(backbone="cnn"), (3, 32, 32))
