"""A zoo's manifest and weights: list the models, find (or download) a model's weights, check them against the
manifest's SHA-256, and build the trained learner.

``manifest.json``::

    {"zoo_version": 1,
     "models": {"omniglot-protonet-5w1s": {
         "file": "omniglot-protonet-5w1s.pt", "sha256": "...", "size": 452123, "url": null,
         "data": "...", "recipe": "...", "learner": "protonet", "input_shape": [1, 28, 28],
         "accuracy": {"mean": 0.97, "ci95": 0.003, "episodes": 1000, "ways": 5, "shots": 1, ...},
         "training": {...}, "metalab_version": "0.1.0"}}}

``file`` sits beside the manifest (package data) when ``url`` is null; otherwise it is downloaded from ``url`` into
``<cache>/zoo/`` (:func:`metalab.data.store.cache_dir`) on first use, resumably, and kept only when its SHA-256 matches.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from metalab.algorithms.base import MetaLearner
from metalab.data.store import DataNotFoundError, cache_dir, download
from metalab.utils.checksum import IntegrityError

#: a folder holding another zoo's ``manifest.json`` (and its packaged weights), used instead of metalab's own
ZOO_ENV = "METALAB_ZOO"
MANIFEST = "manifest.json"
#: the manifest layout this metalab reads
ZOO_FORMAT = 1


@dataclass(frozen=True)
class ZooEntry:
    """One model of a zoo: its name and its manifest record (see the module docstring)."""

    name: str
    record: dict[str, Any]

    @property
    def file(self) -> str:
        return str(self.record["file"])

    @property
    def sha256(self) -> str:
        return str(self.record["sha256"])

    @property
    def url(self) -> str | None:
        return self.record.get("url")

    def accuracy_text(self) -> str:
        """``97.30 +- 0.24 % (5w1s, 1000 episodes)``, or ``-`` when the manifest has no accuracy."""
        accuracy = self.record.get("accuracy")
        if not accuracy:
            return "-"
        return (f"{100 * accuracy['mean']:.2f} +- {100 * accuracy['ci95']:.2f} % ({accuracy['ways']}w"
                f"{accuracy['shots']}s, {accuracy['episodes']} episodes)")


def file_sha256(path: str | Path) -> str:
    """SHA-256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class Zoo:
    """The zoo in ``folder`` (its ``manifest.json``); :func:`packaged_zoo` is metalab's own."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        path = self.folder / MANIFEST
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataNotFoundError(f"no zoo manifest at {path}; point ${ZOO_ENV} at a folder holding a zoo's "
                                    f"{MANIFEST}, or unset it to use metalab's own zoo") from None
        except json.JSONDecodeError as error:
            raise ValueError(f"the zoo manifest {path} is not valid JSON ({error}); rebuild it "
                             f"(benchmarks/zoo/build_entry.py) or reinstall metalab") from None
        if manifest.get("format") != ZOO_FORMAT:
            raise ValueError(f"the zoo manifest {path} has format {manifest.get('format')!r}; this metalab reads "
                             f"format {ZOO_FORMAT}: upgrade metalab, or rebuild the zoo with this one")
        self.version = manifest.get("zoo_version")
        self.entries = {name: ZooEntry(name, record) for name, record in sorted(manifest.get("models", {}).items())}

    def entry(self, name: str) -> ZooEntry:
        """The model called ``name``; ``KeyError`` listing the zoo's models when there is none."""
        if name not in self.entries:
            raise KeyError(f"the zoo has no model {name!r}; `metalab zoo list` shows its models: "
                           f"{', '.join(self.entries) or 'none'}")
        return self.entries[name]

    def local_path(self, entry: ZooEntry) -> Path:
        """Where ``entry``'s weights are read from: beside the manifest, or the download cache for a ``url``."""
        return self.folder / entry.file if entry.url is None else cache_dir() / "zoo" / entry.file

    def weights(self, entry: ZooEntry) -> Path:
        """``entry``'s weights file, downloaded first if it has a ``url`` and is not cached yet, after checking its
        SHA-256 against the manifest; :class:`IntegrityError` naming the file and the fix when it differs."""
        path = self.local_path(entry)
        if entry.url is not None and not path.is_file():
            download(entry.url, path, None, sha256=entry.sha256)  # offline: DataNotFoundError saying where to put it
        if not path.is_file():
            raise DataNotFoundError(f"the weights of zoo model {entry.name} are missing: no file {path}; reinstall "
                                    f"metalab (pip install --force-reinstall metalab) to restore the packaged zoo")
        actual = file_sha256(path)
        if actual != entry.sha256:
            fix = (f"delete it and run the command again to download it again from {entry.url}" if entry.url else
                   "reinstall metalab (pip install --force-reinstall metalab) to restore it")
            raise IntegrityError(f"the weights file {path} of zoo model {entry.name} is corrupt: its SHA-256 is "
                                 f"{actual[:16]}..., the zoo manifest says {entry.sha256[:16]}...; it was not loaded: "
                                 f"{fix}")
        return path

    def load(self, name: str) -> tuple[MetaLearner, DictConfig, ZooEntry]:
        """The trained learner of zoo model ``name`` (eval mode), its config and its entry."""
        from metalab.train.build import learner_of
        from metalab.train.checkpoint import load_checkpoint

        entry = self.entry(name)
        path = self.weights(entry)
        learner, config = learner_of(load_checkpoint(path), path)
        return learner, config, entry


def packaged_zoo() -> Zoo:
    """The zoo in ``$METALAB_ZOO`` if set, else the one that ships inside metalab (``metalab/zoo/weights``)."""
    override = os.environ.get(ZOO_ENV)
    return Zoo(Path(os.path.expanduser(override)) if override else Path(str(files("metalab") / "zoo" / "weights")))


def load_model(name: str) -> tuple[MetaLearner, DictConfig, ZooEntry]:
    """The trained learner of the zoo model ``name`` (see ``metalab zoo list``), its config and its zoo entry."""
    return packaged_zoo().load(name)
