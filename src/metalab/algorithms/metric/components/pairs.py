"""Same/different pairs for verification training (Siamese networks), and Koch et al.'s distortions."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def sample_pairs(labels: Tensor, count: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Balanced pairs of item positions within each task.

    Args:
        labels: [T, N] class label of each of the N items of each task (items of one task with
            different labels are different classes).
        count: pairs per task, even: count / 2 same-class pairs and count / 2 different-class pairs.
    Returns:
        first, second: [T, count] positions into the N items (never an item with itself);
        same: [T, count] bool, True for the first count / 2 pairs.
    """
    if count < 2 or count % 2:
        raise ValueError(f"pairs per task must be an even number >= 2 (half same, half different), got {count}")
    tasks, items = labels.shape
    same_class = labels.unsqueeze(2) == labels.unsqueeze(1)  # [T, N, N]
    not_self = ~torch.eye(items, dtype=torch.bool, device=labels.device)
    positive = same_class & not_self
    negative = ~same_class
    if not positive.flatten(1).any(1).all():
        raise ValueError("same-class pairs need a class with at least 2 items per task; use shots + queries >= 2")
    if not negative.flatten(1).any(1).all():
        raise ValueError("different-class pairs need at least 2 classes per task; use ways >= 2")
    half = count // 2
    first_same, second_same = _draw(positive, half, generator)
    first_diff, second_diff = _draw(negative, half, generator)
    same = torch.zeros(tasks, count, dtype=torch.bool, device=labels.device)
    same[:, :half] = True
    return torch.cat([first_same, first_diff], 1), torch.cat([second_same, second_diff], 1), same


def _draw(allowed: Tensor, count: int, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """``count`` pairs (i, j) per task with allowed[t, i, j], i uniform over items with a partner."""
    tasks, items, _ = allowed.shape
    has_partner = allowed.any(2).float()  # [T, N]
    first = torch.multinomial(has_partner, count, replacement=True, generator=generator)  # [T, count]
    rows = allowed.gather(1, first.unsqueeze(-1).expand(-1, -1, items)).float()  # [T, count, N]
    second = torch.multinomial(rows.flatten(0, 1), 1, generator=generator).view(tasks, count)
    return first, second


def random_affine(images: Tensor, generator: torch.Generator | None = None, probability: float = 0.5) -> Tensor:
    """Koch et al.'s affine distortions of images [B, C, H, W]: each of rotation (+-10 deg), shear
    (+-0.3), scale (0.8..1.2, per axis) and translation (+-2 px, per axis) is applied with
    ``probability``; the background outside the image is 0."""
    batch, _, height, width = images.shape

    def uniform(low: float, high: float, *shape: int) -> Tensor:
        value = low + (high - low) * torch.rand(batch, *shape, generator=generator)
        keep = torch.rand(batch, *([1] * len(shape)), generator=generator) < probability
        return torch.where(keep, value, torch.zeros_like(value))

    angle = uniform(-10.0, 10.0) * math.pi / 180
    shear = uniform(-0.3, 0.3, 2)
    scale = 1 + uniform(-0.2, 0.2, 2)
    shift = uniform(-2.0, 2.0, 2) * torch.tensor([2.0 / width, 2.0 / height])
    cos, sin = angle.cos(), angle.sin()
    rotation = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    shearing = torch.eye(2).repeat(batch, 1, 1)
    shearing[:, 0, 1], shearing[:, 1, 0] = shear[:, 0], shear[:, 1]
    linear = rotation @ shearing @ torch.diag_embed(scale)
    theta = torch.cat([linear, shift.unsqueeze(-1)], -1).to(images.dtype).to(images.device)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, padding_mode="zeros", align_corners=False)
