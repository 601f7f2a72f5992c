"""Heterogeneous image tasks: Omniglot under a per-family transformation, and scikit-learn's 8x8 digits.

Families (the "plain / blur / night / pencil" filters of Jerfel et al. 2019, in spirit, on Omniglot):

    plain    the images as they are
    blur     a 5x5 Gaussian blur (sigma 1 pixel)
    invert   1 - x (dark strokes on a bright ground)
    noise    x + N(0, 0.3^2) per pixel, clipped to [0, 1] (seeded per task)
    digits   ``sklearn.datasets.load_digits`` (1797 8x8 digits, 10 classes), resized to the Omniglot size

The digits have only 10 classes, so their splits share the classes and split the images (per class, item i goes
to train if i % 5 < 3, to val if i % 5 == 3, to test otherwise): a digits task is new images of known classes,
not new classes. :class:`MixedImageTasks` is the mixture with the recipe's weights (``data.families``).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from metalab.data.classes import ClassDataset
from metalab.data.episodes import EpisodeSampler
from metalab.data.mixtures import MixtureTasks, mixing_weights
from metalab.data.task import Task

#: image transforms of the Omniglot families: (images [N, C, H, W] in [0, 1], task generator) -> images
Transform = Callable[[Tensor, np.random.Generator], Tensor]


def gaussian_blur(images: Tensor, sigma: float = 1.0, size: int = 5) -> Tensor:
    """Each channel convolved with a normalised ``size`` x ``size`` Gaussian (zero padding): [N, C, H, W]."""
    offsets = torch.arange(size, dtype=images.dtype) - (size - 1) / 2
    line = torch.exp(-offsets**2 / (2 * sigma**2))
    kernel = torch.outer(line, line) / line.sum() ** 2
    channels = images.shape[1]
    return F.conv2d(images, kernel.expand(channels, 1, size, size), padding=size // 2, groups=channels)


def add_noise(images: Tensor, rng: np.random.Generator, std: float = 0.3) -> Tensor:
    noise = torch.as_tensor(rng.normal(0.0, std, size=tuple(images.shape)), dtype=images.dtype)
    return (images + noise).clamp(0.0, 1.0)


TRANSFORMS: dict[str, Transform] = {
    "plain": lambda images, rng: images,
    "blur": lambda images, rng: gaussian_blur(images),
    "invert": lambda images, rng: 1.0 - images,
    "noise": add_noise,
}
IMAGE_FAMILIES = (*TRANSFORMS, "digits")


@cache
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images.astype(np.float32) / 16.0, digits.target.astype(np.int64)


def split_part(split: str) -> int:
    """Which fifth-classes of each digit's items a split takes: 0 train, 1 val, 2 test (by the split's name)."""
    return 0 if "train" in split else 1 if "val" in split else 2


def load_digits_dataset(split: str, image_size: int = 28) -> ClassDataset:
    """scikit-learn's digits as a :class:`ClassDataset` of uint8 [N, 1, image_size, image_size] (bilinear resize)."""
    images, targets = _digits_arrays()
    part = split_part(split)
    position = np.zeros(len(targets), dtype=np.int64)
    for digit in range(10):
        members = np.flatnonzero(targets == digit)
        position[members] = np.arange(len(members))
    keep = np.flatnonzero({0: position % 5 < 3, 1: position % 5 == 3, 2: position % 5 == 4}[part])
    resized = F.interpolate(torch.from_numpy(images[keep])[:, None], size=(image_size, image_size),
                            mode="bilinear", align_corners=False)
    uint8 = (resized.clamp(0, 1) * 255).round().to(torch.uint8)
    kept = targets[keep]
    items = [torch.from_numpy(np.flatnonzero(kept == d)) for d in range(10)]
    return ClassDataset(uint8, items, [f"digit{d}" for d in range(10)], name=f"digits-{split}")


class MixedImageTasks(MixtureTasks):
    """N-way K-shot tasks from several image families (see the module docstring), family kept as the group.

    Args:
        omniglot: the Omniglot split (a :class:`ClassDataset`) the transformed families draw from.
        split: the split's name (salts the seed; picks the digits' part).
        families: family name -> mixing weight (empty: all five, equally).
    """

    def __init__(self, omniglot: ClassDataset, split: str, ways: int, shots: int, queries: int, seed: int = 0,
                 families: Mapping[str, float] | None = None, reveal_groups: bool = False) -> None:
        names, weights = mixing_weights(families or {}, list(IMAGE_FAMILIES))
        super().__init__(names, weights, split, shots, queries, seed, reveal_groups)
        self.ways = ways
        size = omniglot.image_shape[-1]
        self.samplers: dict[str, EpisodeSampler] = {}
        for name, weight in zip(names, weights):
            if weight > 0:
                data = load_digits_dataset(split, size) if name == "digits" else omniglot
                self.samplers[name] = EpisodeSampler(data, ways, shots, queries, seed=seed)

    def family_task(self, family: int, rng: np.random.Generator, index: int) -> Task:
        name = self.names[family]
        task = self.samplers[name].task(int(rng.integers(2**31)))
        # no global class indices: the families' class numbers index different data sets
        if name == "digits":
            return Task(task.support_x, task.support_y, task.query_x, task.query_y)
        transform = TRANSFORMS[name]
        return Task(transform(task.support_x, rng), task.support_y, transform(task.query_x, rng), task.query_y)
