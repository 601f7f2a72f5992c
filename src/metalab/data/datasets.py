"""The one module that knows every class-labelled image collection: ``load_dataset(dataset, split, ...)``,
``download_dataset`` and ``describe_data`` (the report of ``metalab data``).

Each data set's module reports its own state through one function, ``data_report(root) -> lines``
(found where, cache state, how to get what is missing); adding a data set means adding its module
and naming it here, in :data:`DATASETS`, :data:`REPORTS` and, if it can be downloaded, :data:`DOWNLOADS`.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from metalab.data import miniimagenet, omniglot
from metalab.data.classes import ClassDataset
from metalab.data.folders import load_image_folder
from metalab.data.miniimagenet import load_miniimagenet
from metalab.data.omniglot import download_omniglot, load_omniglot
from metalab.data.store import CACHE_ENV, cache_dir, data_root_origin, resolve_data_root

#: Known data sets and their splits (for ``folder`` the split is the path of the folder).
DATASETS: dict[str, tuple[str, ...]] = {
    "omniglot": omniglot.SPLITS,
    "miniimagenet": miniimagenet.SPLITS,
    "folder": ("<path to a folder with one sub-folder per class>",),
}
#: (image_size, channels) used when not given.
DEFAULTS: dict[str, tuple[int, int]] = {"omniglot": (28, 1), "miniimagenet": (84, 3), "folder": (84, 3)}
#: Each data set's part of ``metalab data``'s report: data root -> lines (the user's folders have none).
REPORTS: dict[str, Callable[[Path], list[str]]] = {"omniglot": omniglot.data_report,
                                                   "miniimagenet": miniimagenet.data_report}
#: The data sets ``metalab data --download`` can fetch: (data root, base_url=None, checksums=None) -> files.
DOWNLOADS: dict[str, Callable[..., list[Path]]] = {"omniglot": download_omniglot}


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
        image_size: overrides the data set's default side length in pixels.
        channels: overrides the default channels (omniglot is always 1 channel, mini-ImageNet 3).
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


def download_dataset(
    name: str, root: Path, base_url: str | None = None, checksums: Mapping[str, str | None] | None = None
) -> list[Path]:
    """Download a data set's official files into the data root ``root`` and return their paths.

    Only ``omniglot`` is downloadable: :func:`metalab.data.omniglot.download_omniglot` says what
    ``base_url`` and ``checksums`` replace. Files already present are kept as they are.
    """
    if name not in DOWNLOADS:
        hint = ""
        if name == "miniimagenet":
            hint = f"; mini-ImageNet cannot be downloaded automatically: {miniimagenet.how_to_get(root)}"
        raise ValueError(f"cannot download data set {name!r}: only {', '.join(map(repr, DOWNLOADS))} "
                         f"is downloadable{hint}")
    return DOWNLOADS[name](root, base_url=base_url, checksums=checksums)


def describe_data(root: Path | None = None) -> str:
    """The human-readable report behind ``metalab data``: what is found where, what is cached, how to get the rest."""
    origin = data_root_origin(root)
    root = resolve_data_root(root)
    lines = [f"data root: {root} ({origin})", f"cache:     {cache_dir()} (${CACHE_ENV}; safe to delete)"]
    for report in REPORTS.values():
        lines += ["", *report(root)]
    return "\n".join(lines)
