"""The one module that knows every class-labelled image collection: ``load_dataset(dataset, split, ...)``,
``download_dataset`` and ``describe_data`` (the report of ``metalab data``).

Each data set's module reports its own state through one function, ``data_report(root) -> lines``
(found where, cache state, how to get what is missing); adding a data set means adding its module
and naming it here, in :data:`DATASETS`, :data:`REPORTS` and, if it can be downloaded, :data:`DOWNLOADS`.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from metalab.data import cifar100, cub, miniimagenet, omniglot, tieredimagenet
from metalab.data.cifar100 import download_cifar100, load_cifar_fs, load_fc100
from metalab.data.classes import ClassDataset
from metalab.data.cub import download_cub, load_cub
from metalab.data.folders import load_image_folder
from metalab.data.miniimagenet import load_miniimagenet
from metalab.data.omniglot import download_omniglot, load_omniglot
from metalab.data.store import CACHE_ENV, cache_dir, data_root_origin, resolve_data_root
from metalab.data.tieredimagenet import load_tieredimagenet

#: Known data sets and their splits (for ``folder`` the split is the path of the folder).
DATASETS: dict[str, tuple[str, ...]] = {
    "omniglot": omniglot.SPLITS,
    "miniimagenet": miniimagenet.SPLITS,
    "tieredimagenet": tieredimagenet.SPLITS,
    "cub": cub.SPLITS,
    "cifar-fs": cifar100.SPLITS,
    "fc100": cifar100.SPLITS,
    "folder": ("<path to a folder with one sub-folder per class>",),
}
#: (image_size, channels) used when not given.
DEFAULTS: dict[str, tuple[int, int]] = {"omniglot": (28, 1), "miniimagenet": (84, 3), "tieredimagenet": (84, 3),
                                        "cub": (84, 3), "cifar-fs": (32, 3), "fc100": (32, 3), "folder": (84, 3)}
#: The loaders of the published data sets with fixed channels: (split, root, image_size) -> ClassDataset.
LOADERS: dict[str, Callable[..., ClassDataset]] = {
    "omniglot": load_omniglot, "miniimagenet": load_miniimagenet, "tieredimagenet": load_tieredimagenet,
    "cub": load_cub, "cifar-fs": load_cifar_fs, "fc100": load_fc100}
#: Each data set's part of ``metalab data``'s report: data root -> lines (the user's folders have none).
REPORTS: dict[str, Callable[[Path], list[str]]] = {
    "omniglot": omniglot.data_report, "miniimagenet": miniimagenet.data_report,
    "tieredimagenet": tieredimagenet.data_report, "cub": cub.data_report, "cifar100": cifar100.data_report}
#: The data sets ``metalab data --download`` can fetch: (data root, base_url=None, checksums=None) -> files.
DOWNLOADS: dict[str, Callable[..., list[Path]]] = {"omniglot": download_omniglot, "cifar100": download_cifar100,
                                                   "cub": download_cub}
#: What a user may name for ``--download`` besides the keys of DOWNLOADS: the data sets built from another's files.
DOWNLOAD_ALIASES = {"cifar-fs": "cifar100", "fc100": "cifar100"}


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
        dataset: ``omniglot`` (default 28 px, 1 channel), ``miniimagenet``, ``tieredimagenet``, ``cub`` (84 px,
            3 channels), ``cifar-fs``, ``fc100`` (32 px, 3 channels) or ``folder`` (84 px, 3 channels; ``split``
            is the folder's path).
        split: a split of the data set, see :data:`DATASETS`.
        root: the data root of the published data sets (default ``$METALAB_DATA`` or the user data dir).
        image_size: overrides the data set's default side length in pixels.
        channels: ``folder`` only (the published data sets have fixed channels: 1 for Omniglot, 3 for the others).
        invert: ``folder`` only: invert grey-scale images (dark strokes on light paper -> bright strokes).
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; valid datasets: {', '.join(DATASETS)}")
    size = image_size if image_size is not None else DEFAULTS[dataset][0]
    if dataset in LOADERS and channels not in (None, DEFAULTS[dataset][1]):
        raise ValueError(f"{dataset} images have {DEFAULTS[dataset][1]} channel(s), got channels={channels}")
    if invert and dataset != "folder":
        raise ValueError("invert applies only to dataset 'folder'")
    if dataset in LOADERS:
        return LOADERS[dataset](split, root, size)
    return load_image_folder(split, size, channels if channels is not None else DEFAULTS[dataset][1], invert=invert)


def download_dataset(
    name: str, root: Path, base_url: str | None = None, checksums: Mapping[str, str | None] | None = None
) -> list[Path]:
    """Download a data set's official files into the data root ``root`` and return their paths.

    Downloadable: ``omniglot``, ``cifar100`` (the release CIFAR-FS and FC100 are built from; those names are
    accepted too) and ``cub``; each module's ``download_*`` says what ``base_url`` and ``checksums`` replace.
    Files already present are kept as they are.
    """
    name = DOWNLOAD_ALIASES.get(name, name)
    if name not in DOWNLOADS:
        hint = ""
        if name == "miniimagenet":
            hint = f"; mini-ImageNet cannot be downloaded automatically: {miniimagenet.how_to_get(root)}"
        elif name == "tieredimagenet":
            hint = "; tiered-ImageNet cannot be downloaded automatically (ImageNet licence): see `metalab data`"
        raise ValueError(f"cannot download data set {name!r}: the downloadable ones are "
                         f"{', '.join(map(repr, DOWNLOADS))}{hint}")
    return DOWNLOADS[name](root, base_url=base_url, checksums=checksums)


def describe_data(root: Path | None = None) -> str:
    """The human-readable report behind ``metalab data``: what is found where, what is cached, how to get the rest."""
    origin = data_root_origin(root)
    root = resolve_data_root(root)
    lines = [f"data root: {root} ({origin})", f"cache:     {cache_dir()} (${CACHE_ENV}; safe to delete)"]
    for report in REPORTS.values():
        lines += ["", *report(root)]
    return "\n".join(lines)
