"""timm and torchvision models as backbones by name: feature dimension, one training step of a metric and a gradient
learner, weights by path (round trip, wrong files refused), the offline error of pretrained=true (network mocked)
and no fetch when a checkpoint's weights follow, inputs the model cannot take."""
from __future__ import annotations

import socket
import warnings
from pathlib import Path

import pytest
import torch

from metalab.algorithms.gradient.fomaml import FirstOrderMAML
from metalab.algorithms.metric.protonet import ProtoNet, ProtoNetOptions
from metalab.data.task import Task
from metalab.nn.backbones import build_backbone, embedding_dim, parse_backbone
from metalab.nn.library_backbones import WeightsUnavailableError, load_weights, weights_from_checkpoint

# timm's ResNets start their blocks' last BatchNorm at zero (zero_init_last), which leaves the blocks' first layers
# without gradient at step one; the setting goes to timm's constructor
SPECS = ["timm:resnet18(zero_init_last=false)", "torchvision:resnet18"]


@pytest.fixture(autouse=True)
def _float64():  # replaces this folder's fixture of that name
    """Full-width networks in float32 (this folder's default, float64, is for exact comparisons); the compatibility
    warning of a torchvision build for another torch is not what these tests check."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def test_library_specs_parse_and_bad_ones_are_refused() -> None:
    assert parse_backbone("timm:resnet18(pretrained=true, drop_rate=0.1)") == (
        "timm:resnet18", {"pretrained": True, "drop_rate": 0.1})
    assert parse_backbone("torchvision:resnet18(weights=/w/r18.safetensors)") == (
        "torchvision:resnet18", {"weights": "/w/r18.safetensors"})
    for spec, message in [("keras:resnet50", "LIBRARY one of timm, torchvision"),
                          ("timm:resnet18(pretrained=yes)", "pretrained must be true or false"),
                          ("timm:resnet18(weights=r18.txt)", "weights must be the path of a state-dict file"),
                          ("timm:resnet18(pretrained=true, weights=a.pth)", "give one of them")]:
        with pytest.raises(ValueError, match=message):
            parse_backbone(spec)


def five_way_task(size: int, channels: int = 3) -> Task:
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(5).repeat(2).expand(1, -1)
    return Task(torch.rand(1, 10, channels, size, size, generator=generator), labels,
                torch.rand(1, 10, channels, size, size, generator=generator), labels)


@pytest.mark.parametrize("spec", SPECS)
def test_a_library_resnet18_gives_512_features_and_trains_a_metric_and_a_gradient_learner(spec: str) -> None:
    torch.manual_seed(0)
    shape = (3, 32, 32)
    protonet = ProtoNet(ProtoNetOptions(backbone=spec), shape)
    assert embedding_dim(protonet.backbone, shape) == 512  # its classifier head removed
    for learner in (protonet,
                    FirstOrderMAML(FirstOrderMAML.Options(backbone=spec, inner_steps=1, inner_lr=0.01), shape)):
        learner.zero_grad()
        metrics = learner.meta_step(five_way_task(32))
        assert torch.isfinite(metrics["loss"])
        parameters = dict(learner.named_parameters())
        reached = [n for n, p in parameters.items() if p.grad is not None and bool(p.grad.abs().sum() > 0)]
        assert len(reached) == len(parameters), f"{type(learner).__name__} with {spec}: some parameters do not learn"


def test_grey_images_are_the_rgb_images_of_equal_channels() -> None:
    backbone = build_backbone("torchvision:resnet18", (1, 32, 32)).eval()
    grey = torch.rand(2, 1, 32, 32)
    torch.testing.assert_close(backbone(grey), backbone(grey.repeat(1, 3, 1, 1)))
    with pytest.raises(ValueError, match="takes RGB or grey-scale images"):
        build_backbone("torchvision:resnet18", (2, 32, 32))


def test_weights_by_path_round_trip_and_a_wrong_file_is_refused(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(1)
    source = build_backbone("torchvision:resnet18", (3, 32, 32)).eval()
    state = source.model.state_dict()
    torch.save({**state, "fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}, tmp_path / "full.pth")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "headless.safetensors"))
    images = torch.rand(2, 3, 32, 32)
    loaded = build_backbone(f"torchvision:resnet18(weights={tmp_path / 'full.pth'})", (3, 32, 32)).eval()
    torch.testing.assert_close(loaded(images), source(images), rtol=0, atol=0)  # the head's keys are ignored
    torch.nn.init.zeros_(loaded.model.conv1.weight)
    load_weights(loaded, tmp_path / "headless.safetensors", "torchvision:resnet18")  # or absent
    torch.testing.assert_close(loaded(images), source(images), rtol=0, atol=0)
    wrong = {"missing.pth": {k: v for k, v in state.items() if not k.startswith("layer4.")},
             "unexpected.pth": {**state, "layer5.weight": torch.zeros(1)},
             "shape.pth": {**state, "conv1.weight": torch.zeros(64, 3, 3, 3)}}
    for name, message in [("missing.pth", "missing keys: layer4.0.conv1.weight"),
                          ("unexpected.pth", "1 unexpected keys: layer5.weight"),
                          ("shape.pth", r"mismatched shapes: conv1.weight \(64, 3, 3, 3\)")]:
        torch.save(wrong[name], tmp_path / name)
        with pytest.raises(ValueError, match=f"{name} does not fit backbone torchvision:resnet18 .*{message}"):
            load_weights(loaded, tmp_path / name, "torchvision:resnet18")
    (tmp_path / "broken.pth").write_bytes(b"not a state dict")
    with pytest.raises(ValueError, match="broken.pth is not a readable state dict"):
        load_weights(loaded, tmp_path / "broken.pth", "torchvision:resnet18")
    with pytest.raises(FileNotFoundError, match="absent.pth does not exist"):
        load_weights(loaded, tmp_path / "absent.pth", "torchvision:resnet18")
    torch.testing.assert_close(loaded(images), source(images), rtol=0, atol=0)  # a refused file changes nothing


@pytest.mark.parametrize("library", ["timm", "torchvision"])
def test_pretrained_weights_offline_give_an_error_naming_the_fix(library: str, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    def no_network(*args: object, **kwargs: object) -> None:
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no retries with back-off
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # empty caches: nothing fetched before is found
    with pytest.raises(WeightsUnavailableError, match="could not fetch the published weights.*weights=PATH"):
        build_backbone(f"{library}:resnet18(pretrained=true)", (3, 32, 32))
    with weights_from_checkpoint():  # rebuilt for a checkpoint's weights: neither fetched nor read
        build_backbone(f"{library}:resnet18(pretrained=true)", (3, 32, 32))
        build_backbone(f"{library}:resnet18(weights={tmp_path / 'absent.pth'})", (3, 32, 32))


def test_inputs_a_model_cannot_take_are_refused_naming_the_size() -> None:
    with pytest.raises(ValueError, match="does not run on images of 32x32.*set data.image_size"):
        build_backbone("timm:vit_tiny_patch16_224", (3, 32, 32))
    with pytest.raises(ValueError, match="timm has no model 'resnet1'"):
        build_backbone("timm:resnet1", (3, 32, 32))
