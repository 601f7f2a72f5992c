"""One entry point for every class-labelled image collection: ``load_dataset(dataset, split, ...)``."""
from __future__ import annotations

from pathlib import Path

from metalab.data.classes import ClassDataset
from metalab.data.folders import load_image_folder, load_miniimagenet
from metalab.data.omniglot import SPLITS as OMNIGLOT_SPLITS
from metalab.data.omniglot import load_omniglot
from metalab.data.store import MINIIMAGENET_SPLITS

#: Known data sets and their splits (for ``folder`` the split is the path of the folder).
DATASETS: dict[str, tuple[str, ...]] = {
    "omniglot": OMNIGLOT_SPLITS,
    "miniimagenet": MINIIMAGENET_SPLITS,
    "folder": ("<path to a folder with one sub-folder per class>",),
}
#: (image_size, channels) used when not given.
DEFAULTS: dict[str, tuple[int, int]] = {"omniglot": (28, 1), "miniimagenet": (84, 3), "folder": (84, 3)}


def load_dataset(
    dataset: str,
    split: str,
    root: str | Path | None = None,
    image_size: int | None = None,
    channels: int | None = None,
    invert: bool = False,
) -> ClassDataset:
    """Load ``split`` of ``dataset`` as a :class:`ClassDataset` of uint8 images [N, channels, S, S].

    Args:
        dataset: ``omniglot`` (default 28 px, 1 channel), ``miniimagenet`` (84 px, 3 channels) or
            ``folder`` (84 px, 3 channels; ``split`` is the folder's path).
        split: a split of the data set, see :data:`DATASETS`.
        root: the data root for omniglot/miniimagenet (default ``$METALAB_DATA`` or the user data dir).
        image_size, channels: override the defaults (omniglot is always 1 channel, mini-ImageNet 3).
        invert: ``folder`` only: invert grey-scale images (dark strokes on light paper -> bright strokes).
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; valid datasets: {', '.join(DATASETS)}")
    size = image_size if image_size is not None else DEFAULTS[dataset][0]
    fixed = {"omniglot": 1, "miniimagenet": 3}
    if dataset in fixed and channels not in (None, fixed[dataset]):
        raise ValueError(f"{dataset} images have {fixed[dataset]} channel(s), got channels={channels}")
    if invert and dataset != "folder":
        raise ValueError("invert applies only to dataset 'folder'")
    if dataset == "omniglot":
        return load_omniglot(split, root, size)
    if dataset == "miniimagenet":
        return load_miniimagenet(split, root, size)
    return load_image_folder(split, size, channels if channels is not None else DEFAULTS[dataset][1], invert=invert)
