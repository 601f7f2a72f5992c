"""ClassDataset: a class-labelled collection of images, the source of classification episodes."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


class ClassDataset:
    """Classes and their items, all images held in one uint8 tensor.

    Args:
        images: [N, C, H, W] uint8 (0..255) or float tensor holding every item of every class.
        class_items: for each class, the indices into ``images`` of its items.
        class_names: one stable, unique name per class (used by episode manifests).
        groups: optional group name per class (e.g. the Omniglot alphabet), for within-group episodes.
        name: the dataset/split name, shown in errors and manifests.
        held_out: the first ``held_out`` items of every class are its held-out items, the only ones an episode
            queries, and the others the only ones it adapts on (a fixed split of each class's items, as
            WarpGrad's Omniglot alphabet tasks hold out each character's first drawings); 0: no fixed split.
    """

    def __init__(
        self,
        images: Tensor,
        class_items: Sequence[Sequence[int] | Tensor],
        class_names: Sequence[str],
        groups: Sequence[str] | None = None,
        name: str = "dataset",
        held_out: int = 0,
    ) -> None:
        if images.dim() != 4:
            raise ValueError(f"{name}: images must be [N, C, H, W], got shape {tuple(images.shape)}")
        if len(class_items) != len(class_names):
            raise ValueError(f"{name}: {len(class_items)} item lists for {len(class_names)} class names")
        if groups is not None and len(groups) != len(class_names):
            raise ValueError(f"{name}: {len(groups)} groups for {len(class_names)} classes")
        if len(set(class_names)) != len(class_names):
            raise ValueError(f"{name}: class names must be unique")
        self.images = images
        self.class_items = [torch.as_tensor(items, dtype=torch.long) for items in class_items]
        self.class_names = list(class_names)
        self.groups = list(groups) if groups is not None else None
        if held_out < 0:
            raise ValueError(f"{name}: held_out must be >= 0 (items per class held out for queries), got {held_out}")
        self.name = name
        self.held_out = held_out
        self._index_of = {n: i for i, n in enumerate(self.class_names)}

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one item."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]  # Size slices: tuple[int, ...]; images are 4-D

    def __len__(self) -> int:
        return self.num_classes

    def items_in(self, class_index: int) -> int:
        """Number of items of class ``class_index``."""
        return len(self.class_items[class_index])

    def class_index(self, class_name: str) -> int:
        try:
            return self._index_of[class_name]
        except KeyError:
            raise KeyError(f"class {class_name!r} is not in {self.name}") from None

    def group_classes(self) -> dict[str, list[int]]:
        """Group name -> indices of its classes (one group holding everything when ungrouped)."""
        if self.groups is None:
            return {self.name: list(range(self.num_classes))}
        by_group: dict[str, list[int]] = {}
        for index, group in enumerate(self.groups):
            by_group.setdefault(group, []).append(index)
        return by_group

    def get(self, class_index: int, positions: Sequence[int] | Tensor) -> Tensor:
        """Items ``positions`` (0..items_in-1) of one class as float32 [k, C, H, W] in [0, 1]."""
        index = self.class_items[class_index][torch.as_tensor(positions, dtype=torch.long)]
        return to_float(self.images.index_select(0, index))

    def gather(self, class_indices: Sequence[int], positions: Sequence[Sequence[int]]) -> Tensor:
        """Items of several classes at once: [sum of len(positions[i]), C, H, W] float32."""
        index = torch.cat(
            [self.class_items[c][torch.as_tensor(p, dtype=torch.long)] for c, p in zip(class_indices, positions)]
        )
        return to_float(self.images.index_select(0, index))

    def subset(self, class_indices: Sequence[int], name: str | None = None) -> ClassDataset:
        """A dataset of only ``class_indices`` (sharing the image tensor)."""
        return ClassDataset(
            self.images,
            [self.class_items[c] for c in class_indices],
            [self.class_names[c] for c in class_indices],
            [self.groups[c] for c in class_indices] if self.groups is not None else None,
            name or self.name,
            self.held_out,
        )

    def with_rotations(self, angles: Sequence[int] = (0, 90, 180, 270), name: str | None = None) -> ClassDataset:
        """Rotation as new classes: every (class, angle) becomes a class named ``<class>/rotDDD``."""
        for angle in angles:
            if angle % 90:
                raise ValueError(f"rotation angles must be multiples of 90, got {angle}")
        blocks, class_items, names, groups = [], [], [], []
        offset = 0
        for angle in angles:
            blocks.append(torch.rot90(self.images, k=angle // 90, dims=(2, 3)))
            for c in range(self.num_classes):
                class_items.append(self.class_items[c] + offset)
                names.append(f"{self.class_names[c]}/rot{angle:03d}")
                groups.append(self.groups[c] if self.groups is not None else self.name)
            offset += self.images.shape[0]
        return ClassDataset(torch.cat(blocks), class_items, names, groups, name or self.name)


def to_float(images: Tensor) -> Tensor:
    """uint8 images -> float32 in [0, 1]; float images unchanged."""
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    return images.float()
