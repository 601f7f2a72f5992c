"""Data augmentation of training episodes through torchvision transforms, named in the recipe (``data.augment``).

``data.augment`` lists operations, each ``name`` or ``name(arguments)`` with arguments by position or by name::

    data.augment: [random_crop(padding=8), color_jitter(0.4, 0.4, 0.4), hflip]

Every image of a training task (support and query) gets its own random draw, from a generator seeded by the
training seed and the task's index, so that a run (and its resumption, on any number of processes) sees the same
augmented images. Validation and test episodes are never augmented.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from metalab.data.task import Task

#: operation -> its parameters in positional order with their defaults (``size`` None: the images' own size)
OPERATIONS: dict[str, dict[str, Any]] = {
    "random_resized_crop": {"size": None, "scale_min": 0.08},
    "random_crop": {"size": None, "padding": 0},
    "hflip": {"p": 0.5},
    "color_jitter": {"brightness": 0.0, "contrast": 0.0, "saturation": 0.0, "hue": 0.0},
}
EXAMPLE = "data.augment=[random_crop(padding=8),'color_jitter(0.4,0.4,0.4)',hflip]"


def parse_operation(spec: str) -> tuple[str, dict[str, Any]]:
    """``"color_jitter(0.4, 0.4, 0.4)"`` -> ("color_jitter", {"brightness": 0.4, ..., "hue": 0.0}): every
    parameter of the operation, given or default. ``ValueError`` naming the operations or parameters otherwise."""
    name, _, rest = spec.strip().partition("(")
    name = name.strip()
    if name not in OPERATIONS:
        raise ValueError(f"data.augment: unknown operation {name!r}; known: {', '.join(OPERATIONS)} "
                         f"(e.g. {EXAMPLE})")
    if rest and not rest.endswith(")"):
        raise ValueError(f"data.augment: {spec!r}: arguments go in parentheses, e.g. 'random_crop(84, padding=8)'")
    parameters = dict(OPERATIONS[name])
    order = list(parameters)
    for position, item in enumerate(filter(None, (part.strip() for part in rest[:-1].split(",")))):
        key, equals, text = (piece.strip() for piece in item.rpartition("=")) if "=" in item else ("", "", item)
        if not equals:
            if position >= len(order):
                raise ValueError(f"data.augment: {spec!r}: {name} takes at most {len(order)} arguments "
                                 f"({', '.join(order)})")
            key = order[position]
        if key not in parameters:
            raise ValueError(f"data.augment: {name} has no parameter {key!r}; it takes {', '.join(order)}")
        try:
            parameters[key] = int(text) if key in ("size", "padding") else float(text)
        except ValueError:
            raise ValueError(f"data.augment: {spec!r}: {key} must be a number, got {text!r}") from None
    return name, parameters


def build_augmentation(specs: Sequence[str], image_shape: Sequence[int]) -> Callable[[Tensor], Tensor]:
    """The torchvision transform of ``specs`` for images of ``image_shape`` (C, H, W): one image [C, H, W] in
    [0, 1] -> one augmented image of the same shape."""
    from metalab.utils.torchvision_compat import import_transforms

    v2 = import_transforms()
    size = (int(image_shape[1]), int(image_shape[2]))
    steps = []
    for spec in specs:
        name, p = parse_operation(spec)
        if name in ("random_resized_crop", "random_crop"):
            crop = size if p["size"] is None else (p["size"], p["size"])
            if crop != size:
                raise ValueError(f"data.augment: {spec!r} crops to {crop[0]}x{crop[1]} but the images are "
                                 f"{size[0]}x{size[1]} (data.image_size); crop to their size (leave the size out)")
        if name == "random_resized_crop":
            steps.append(v2.RandomResizedCrop(size, scale=(p["scale_min"], 1.0), antialias=True))
        elif name == "random_crop":
            steps.append(v2.RandomCrop(size, padding=p["padding"] or None))
        elif name == "hflip":
            steps.append(v2.RandomHorizontalFlip(p["p"]))
        else:
            steps.append(v2.ColorJitter(p["brightness"], p["contrast"], p["saturation"], p["hue"]))
    return v2.Compose(steps)


class AugmentedTasks:
    """A training task source whose tasks' images (support and query) are augmented, each task with a generator
    seeded by ``(seed, task index)``; ``fixed()`` (evaluation episodes) is the source's own, unaugmented."""

    def __init__(self, source: Any, augment: Callable[[Tensor], Tensor], seed: int) -> None:
        self.source, self.augment, self.seed = source, augment, seed

    def batch(self, start: int, size: int) -> Task:
        """Tasks ``start .. start + size - 1`` of the source, augmented (inputs [T, N, C, H, W])."""
        batch = self.source.batch(start, size)
        support, query = batch.support_x.clone(), batch.query_x.clone()
        with torch.random.fork_rng(devices=[]):  # the global generator continues as if nothing was drawn
            for t in range(len(batch)):
                torch.manual_seed(int(np.random.SeedSequence([self.seed, start + t]).generate_state(1)[0]))
                for images in (support[t], query[t]):
                    for i in range(images.shape[0]):
                        images[i] = self.augment(images[i])
        batch.support_x, batch.query_x = support, query
        return batch

    def fixed(self, count: int) -> Any:
        return self.source.fixed(count)


def augmented(source: Any, specs: Sequence[str], image_shape: Sequence[int], seed: int) -> Any:
    """``source`` itself without ``specs``, else its tasks augmented (:class:`AugmentedTasks`)."""
    if not specs:
        return source
    if len(image_shape) != 3:
        raise ValueError(f"data.augment applies to images (C, H, W); this data set's inputs have shape "
                         f"{tuple(image_shape)}: set data.augment=[]")
    return AugmentedTasks(source, build_augmentation(list(specs), image_shape), seed)
