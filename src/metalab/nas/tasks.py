"""Supervised classification tasks for an architecture search: train / validation / test tensors.

* ``digits``: the 8x8 handwritten digits scikit-learn ships (1797 images, 10 classes), used at 8x8 (not
  upsampled), pixel values 0..16 scaled to [0, 1]; ``classes`` picks a subset (relabelled 0..n-1).
* ``omniglot-alphabets``: characters of Omniglot's background alphabets (``lake-background``) as classes,
  ``alphabets`` by name or the first ``alphabet_count`` in sorted order; each character's 20 drawings are
  split per class into train / validation / test.

The split is stratified and seeded: ``test_fraction`` of each class is held out for the final score, and the
rest is halved into the search's training and validation halves, as DARTS halves CIFAR-10's training set.
Retraining uses training + validation.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

TASK_KINDS = ("digits", "omniglot-alphabets")


@dataclass
class TaskOptions:
    #: "digits" (scikit-learn's 8x8 digits) or "omniglot-alphabets" (lake-background characters as classes).
    dataset: str = "digits"
    #: digits: the classes to keep (None: all ten), relabelled 0..n-1 in the order given.
    classes: list[int] | None = None
    #: omniglot-alphabets: alphabet names (None: the first ``alphabet_count`` in sorted order).
    alphabets: list[str] | None = None
    alphabet_count: int = 2
    #: omniglot-alphabets: side of the images (28: the few-shot literature's size).
    image_size: int = 28
    #: the held-out share of each class (the test split).
    test_fraction: float = 0.25
    #: seed of the split.
    seed: int = 0


@dataclass
class SupervisedTask:
    """Inputs [N, C, H, W] float and labels [N] long of each split."""

    name: str
    train: tuple[Tensor, Tensor]
    val: tuple[Tensor, Tensor]
    test: tuple[Tensor, Tensor]
    class_names: list[str] = field(default_factory=list)

    @property
    def classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train[0].shape[1:])  # type: ignore[return-value]  # images are [N, C, H, W]

    def train_and_val(self) -> tuple[Tensor, Tensor]:
        return torch.cat([self.train[0], self.val[0]]), torch.cat([self.train[1], self.val[1]])


def stratified_split(x: Tensor, y: Tensor, test_fraction: float, seed: int
                     ) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """(train, val, test) with each class's examples shuffled, ``test_fraction`` of them to test and the rest
    halved between train and val (train gets the odd one)."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"task.test_fraction must be in (0, 1), got {test_fraction}")
    generator = torch.Generator().manual_seed(seed)
    parts: list[list[Tensor]] = [[], [], []]
    for label in torch.unique(y):
        index = torch.nonzero(y == label).flatten()
        index = index[torch.randperm(len(index), generator=generator)]
        n_test = max(1, round(test_fraction * len(index)))
        rest = index[n_test:]
        n_train = (len(rest) + 1) // 2
        if n_train < 1 or len(rest) - n_train < 1:
            raise ValueError(f"class {int(label)} has {len(index)} examples: too few for train, val and test")
        for part, chosen in zip(parts, (rest[:n_train], rest[n_train:], index[:n_test])):
            part.append(chosen)
    train, val, test = (torch.cat(p) for p in parts)
    return (x[train], y[train]), (x[val], y[val]), (x[test], y[test])


def digits_task(options: TaskOptions) -> SupervisedTask:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0  # [1797, 1, 8, 8]
    y = torch.tensor(digits.target, dtype=torch.long)
    classes = list(range(10)) if options.classes is None else [int(c) for c in options.classes]
    if not classes or len(set(classes)) != len(classes) or any(not 0 <= c <= 9 for c in classes):
        raise ValueError(f"task.classes must be distinct digits 0..9 (or null: all), got {options.classes}")
    keep = torch.isin(y, torch.tensor(classes))
    x, y = x[keep], y[keep]
    y = torch.tensor([classes.index(int(label)) for label in y], dtype=torch.long)
    name = "digits" if options.classes is None else "digits-" + "".join(str(c) for c in classes)
    train, val, test = stratified_split(x, y, options.test_fraction, options.seed)
    return SupervisedTask(name, train, val, test, [str(c) for c in classes])


def omniglot_alphabets_task(options: TaskOptions, data_root: str | Path | None = None) -> SupervisedTask:
    from metalab.data.classes import to_float
    from metalab.data.omniglot import load_omniglot

    dataset = load_omniglot("lake-background", data_root, options.image_size)
    by_alphabet = dataset.group_classes()
    names = sorted(by_alphabet)
    if options.alphabets is not None:
        unknown = [a for a in options.alphabets if a not in by_alphabet]
        if unknown:
            raise ValueError(f"task.alphabets: {unknown} are not background alphabets; known: {', '.join(names)}")
        chosen = list(options.alphabets)
    else:
        if not 1 <= options.alphabet_count <= len(names):
            raise ValueError(f"task.alphabet_count must be in 1..{len(names)}, got {options.alphabet_count}")
        chosen = names[: options.alphabet_count]
    classes = [c for a in chosen for c in by_alphabet[a]]
    xs, ys = [], []
    for label, c in enumerate(classes):
        items = dataset.class_items[c]
        xs.append(to_float(dataset.images.index_select(0, items)))
        ys.append(torch.full((len(items),), label, dtype=torch.long))
    train, val, test = stratified_split(torch.cat(xs), torch.cat(ys), options.test_fraction, options.seed)
    return SupervisedTask("omniglot-" + "+".join(chosen), train, val, test, [dataset.class_names[c] for c in classes])


def load_task(options: TaskOptions, data_root: str | Path | None = None) -> SupervisedTask:
    """The task that ``options`` names (``data_root``: where Omniglot is, see :mod:`metalab.data.store`)."""
    if options.dataset == "digits":
        return digits_task(options)
    if options.dataset == "omniglot-alphabets":
        return omniglot_alphabets_task(options, data_root)
    raise ValueError(f"task.dataset must be one of {', '.join(TASK_KINDS)}, got {options.dataset!r}")
