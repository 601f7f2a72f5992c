"""Backbones by name from timm and torchvision (``timm:resnet18``, ``torchvision:resnet18``): the library's model
without its classifier head, behind its own input normalisation, with the published ImageNet weights
(``pretrained=true``) or a local weights file (``weights=PATH``)."""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

#: the libraries whose models are backbones by ``LIBRARY:MODEL``
LIBRARIES = ("timm", "torchvision")
#: the settings metalab reads itself; every other setting goes to the library's model constructor
#: (e.g. ``timm:resnet18(drop_rate=0.1)``)
OWN_SETTINGS = ("pretrained", "weights")
#: ImageNet mean and standard deviation per RGB channel: what torchvision's classification weights expect
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
#: attributes that hold a torchvision classifier's head, in the order they are looked for
TORCHVISION_HEADS = ("fc", "classifier", "head", "heads")
WEIGHTS_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")


#: True while learners are rebuilt to receive a checkpoint's weights (:func:`weights_from_checkpoint`)
_checkpoint_follows: ContextVar[bool] = ContextVar("checkpoint_follows", default=False)


@contextmanager
def weights_from_checkpoint() -> Iterator[None]:
    """Backbones built inside skip ``pretrained`` and ``weights``: a checkpoint's weights replace them right after,
    so a run trained from published weights loads without network access (and without its weights file)."""
    token = _checkpoint_follows.set(True)
    try:
        yield
    finally:
        _checkpoint_follows.reset(token)


class WeightsUnavailableError(FileNotFoundError):
    """The published weights of a backbone could not be fetched (no network) and are not in the library's cache."""


class LibraryBackbone(nn.Module):
    """A timm or torchvision model without its classifier: images [B, C, H, W] in [0, 1] -> features [B, D].

    Grey-scale images (C = 1) are repeated to the 3 channels the model takes; images are normalised with the mean
    and standard deviation of the model's pretraining ([3] each, non-persistent buffers), so that published and
    local weights see what they were trained on. ``model`` is the library's module (a weights file holds its keys);
    ``head`` the qualified name of the classifier removed from it (its keys in a weights file are ignored).
    """

    mean: Tensor
    std: Tensor

    def __init__(self, model: nn.Module, head: str, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.model = model
        self.head = head
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, self.mean.shape[1], -1, -1)
        return self.model((x - self.mean) / self.std).flatten(1)


def parse_value(text: str) -> bool | int | float | str:
    """A setting's value as written in a spec: true/false, an int, a float, else the text (quotes stripped)."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text.strip("'\"")


def check_settings(spec: str, settings: dict[str, Any]) -> None:
    """Refuse ``pretrained`` that is not a boolean, ``weights`` that is not a path, or both at once."""
    if not isinstance(settings.get("pretrained", False), bool):
        raise ValueError(f"backbone {spec}: pretrained must be true or false, got {settings['pretrained']!r}")
    weights = settings.get("weights")
    if weights is not None and (not isinstance(weights, str) or not weights.endswith(WEIGHTS_SUFFIXES)):
        raise ValueError(f"backbone {spec}: weights must be the path of a state-dict file "
                         f"({', '.join(WEIGHTS_SUFFIXES)}), got {weights!r}")
    if settings.get("pretrained") and weights is not None:
        raise ValueError(f"backbone {spec}: pretrained=true fetches the published weights and weights=PATH loads a "
                         f"local file; give one of them")


def _library(library: str, spec: str) -> Any:
    from metalab.utils.torchvision_compat import import_timm, import_torchvision

    try:
        return import_timm() if library == "timm" else import_torchvision()
    except ImportError as error:
        raise ValueError(f"backbone {spec}: {error}") from None


def _fetch(spec: str, create: Any, pretrained: bool) -> nn.Module:
    """``create()`` a model, which downloads its published weights when ``pretrained``; offline,
    :class:`WeightsUnavailableError`."""
    try:
        return create()
    except OSError as error:  # URLError (torch.hub), huggingface_hub's LocalEntryNotFoundError, socket errors
        if not pretrained:
            raise
        raise WeightsUnavailableError(
            f"backbone {spec}: could not fetch the published weights ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else 'no network'}). This machine has no network access or "
            f"the weights are not in the library's cache (~/.cache/torch/hub for torchvision, ~/.cache/huggingface "
            f"for timm; HF_HUB_OFFLINE=1 makes timm fail at once instead of retrying). Fix: run once where there is "
            f"internet (or copy that cache here), or download the weights file and give it by path: weights=PATH "
            f"(.pth or .safetensors) instead of pretrained=true") from None


def _timm_model(spec: str, name: str, pretrained: bool, kwargs: dict[str, Any]) -> LibraryBackbone:
    timm = _library("timm", spec)
    if not timm.is_model(name):
        close = timm.list_models(f"*{name[:4]}*")[:8]
        raise ValueError(f"backbone {spec}: timm has no model {name!r}"
                         + (f"; similar: {', '.join(close)}" if close else "; list them with timm.list_models()"))
    model = _fetch(spec, lambda: timm.create_model(name, pretrained=pretrained, num_classes=0, **kwargs), pretrained)
    config: dict[str, Any] = getattr(model, "pretrained_cfg", {})
    return LibraryBackbone(model, str(config.get("classifier", "fc")), config.get("mean", IMAGENET_MEAN),
                           config.get("std", IMAGENET_STD))


def _torchvision_model(spec: str, name: str, pretrained: bool, kwargs: dict[str, Any]) -> LibraryBackbone:
    models = _library("torchvision", spec).models
    known = models.list_models(module=models)  # the classification models (not detection, segmentation, video)
    if name not in known:
        raise ValueError(f"backbone {spec}: torchvision has no classification model {name!r}; it has "
                         f"{', '.join(known)}")
    model = _fetch(spec, lambda: models.get_model(name, weights="DEFAULT" if pretrained else None, **kwargs),
                   pretrained)
    head = next((attribute for attribute in TORCHVISION_HEADS if hasattr(model, attribute)), None)
    if head is None or not _remove_linear(model, head):
        raise ValueError(f"backbone {spec}: found no linear classifier head to remove in torchvision's {name}; "
                         f"use timm:{name} (timm removes heads itself)")
    return LibraryBackbone(model, head, IMAGENET_MEAN, IMAGENET_STD)


def _remove_linear(model: nn.Module, attribute: str) -> bool:
    """Replace the classifier ``model.<attribute>`` (a Linear, or the last Linear of a Sequential) by identity."""
    head = getattr(model, attribute)
    if isinstance(head, nn.Linear):
        setattr(model, attribute, nn.Identity())
        return True
    if isinstance(head, nn.Sequential):
        linear = [key for key, layer in head.named_children() if isinstance(layer, nn.Linear)]
        if linear:
            setattr(head, linear[-1], nn.Identity())
            return True
    return False


def build_library_backbone(spec: str, library: str, name: str, settings: dict[str, Any],
                           input_shape: Sequence[int]) -> LibraryBackbone:
    """``library``'s model ``name`` without its head, for images of ``input_shape`` (C, H, W), C 1 or 3.

    ``settings``: ``pretrained`` (bool: the library's published weights), ``weights`` (a state-dict file),
    anything else goes to the library's constructor; inside :func:`weights_from_checkpoint` the first two are
    skipped. Raises ``ValueError`` for inputs the model cannot take.
    """
    if len(input_shape) != 3 or input_shape[0] not in (1, 3):
        raise ValueError(f"backbone {spec} takes RGB or grey-scale images (3 or 1, C, H, W), got input shape "
                         f"{tuple(input_shape)}; set data.channels=3")
    check_settings(spec, settings)
    kwargs = {key: value for key, value in settings.items() if key not in OWN_SETTINGS}
    if _checkpoint_follows.get():
        settings = kwargs
    build = _timm_model if library == "timm" else _torchvision_model
    try:
        backbone = build(spec, name, bool(settings.get("pretrained", False)), kwargs)
    except TypeError as error:  # a setting the constructor does not take
        raise ValueError(f"backbone {spec}: {error}; the settings other than {', '.join(OWN_SETTINGS)} go to "
                         f"{library}'s constructor of {name}") from None
    if settings.get("weights") is not None:
        load_weights(backbone, Path(settings["weights"]), spec)
    _check_input(backbone, input_shape, spec)
    return backbone


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """A state dict from a ``.safetensors`` file or a ``torch.save`` file (``.pth``, ``.pt``, ``.bin``; a
    checkpoint whose ``state_dict`` or ``model`` entry holds it is read too)."""
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist; give the path of a .pth or .safetensors "
                                f"state dict of the model")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle errors, truncated zip archives, refused globals
        raise ValueError(f"weights file {path} is not a readable state dict ({type(error).__name__}: "
                         f"{str(error).splitlines()[0]}); save one with torch.save(model.state_dict(), path)") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(value, Tensor) for value in state.values()):
        raise ValueError(f"weights file {path} holds no state dict (a mapping of names to tensors); save one with "
                         f"torch.save(model.state_dict(), path)")
    return state


def load_weights(backbone: LibraryBackbone, path: Path, spec: str) -> None:
    """Load a state dict of the library's model into ``backbone``: every key of the headless model must be in it
    with its shape; the removed classifier's keys are ignored, any other key is refused."""
    state = read_state_dict(path)
    own = backbone.model.state_dict()
    unexpected = [key for key in state if key not in own and not key.startswith(backbone.head + ".")]
    missing = [key for key in own if key not in state]
    shapes = [f"{key} {tuple(state[key].shape)} (the model's: {tuple(value.shape)})"
              for key, value in own.items() if key in state and state[key].shape != value.shape]
    problems = [f"{len(keys)} {what}: {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}"
                for keys, what in ((missing, "missing keys"), (unexpected, "unexpected keys"),
                                   (shapes, "mismatched shapes")) if keys]
    if problems:
        raise ValueError(f"weights file {path} does not fit backbone {spec} ({'; '.join(problems)}); give the weights "
                         f"of this very model, as its library names them (its state_dict, classifier keys optional)")
    backbone.model.load_state_dict({key: state[key] for key in own})


@torch.no_grad()
def _check_input(backbone: LibraryBackbone, input_shape: Sequence[int], spec: str) -> None:
    """Refuse, naming the fix, an input size the model cannot take (too small for its downsampling, or a
    transformer's fixed size)."""
    was_training = backbone.training
    backbone.eval()
    try:
        backbone(torch.zeros(1, *input_shape))
    except (RuntimeError, ValueError, AssertionError) as error:
        raise ValueError(f"backbone {spec} does not run on images of {input_shape[1]}x{input_shape[2]} "
                         f"({str(error).splitlines()[0]}); set data.image_size to a size it takes (its pretraining "
                         f"size, e.g. 224, always works; a fixed-size model may take img_size=N as a setting)"
                         ) from None
    finally:
        backbone.train(was_training)
