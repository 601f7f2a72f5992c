"""N-way K-shot episode sampling and fixed, seeded evaluation episodes with JSON manifests.

Every episode is a pure function of ``(seed, index)``: the sampler keeps no state, so
training resumes exactly, distributed ranks take disjoint index ranges of one meta-batch,
and evaluation episodes are the same in every run that uses the same seed.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metalab.data.classes import ClassDataset
from metalab.data.task import Task
from metalab.utils.io import atomic_write_text


@dataclass(frozen=True)
class Episode:
    """Which items make one episode: class ``classes[i]`` gets label i.

    support[i] / query[i] are item positions within class ``classes[i]`` (disjoint).
    """

    classes: tuple[int, ...]
    support: tuple[tuple[int, ...], ...]
    query: tuple[tuple[int, ...], ...]


class EpisodeSampler:
    """Samples N-way K-shot tasks with Q queries per class from a :class:`ClassDataset`.

    Labels are 0..ways-1 in the order the classes were drawn; support and query items are
    disjoint. With ``within_group`` all ways come from one group (e.g. one Omniglot alphabet). A dataset with
    ``held_out`` items per class (:class:`ClassDataset`) gives queries from those only and the support from the rest.
    """

    def __init__(
        self,
        dataset: ClassDataset,
        ways: int,
        shots: int,
        queries: int,
        seed: int = 0,
        within_group: bool = False,
    ) -> None:
        if ways < 1 or shots < 1 or queries < 0:
            raise ValueError(f"need ways >= 1, shots >= 1, queries >= 0; "
                             f"got ways={ways}, shots={shots}, queries={queries}")
        if ways > dataset.num_classes:
            raise ValueError(
                f"{ways}-way episodes need {ways} classes but {dataset.name} has only {dataset.num_classes}; "
                f"lower the ways (at most {dataset.num_classes}) or use a split with more classes"
            )
        per_class = shots + queries
        smallest = min(range(dataset.num_classes), key=dataset.items_in)
        held = dataset.held_out
        if held and (queries > held or shots > dataset.items_in(smallest) - held):
            raise ValueError(
                f"{dataset.name} holds out the first {held} items of each class for queries and adapts on the "
                f"others ({dataset.items_in(smallest) - held} in its smallest class); {shots} shots and {queries} "
                f"queries do not fit: use queries <= {held} and shots <= {dataset.items_in(smallest) - held}"
            )
        if dataset.items_in(smallest) < per_class:
            raise ValueError(
                f"{shots} shots + {queries} queries need {per_class} items per class but class "
                f"{dataset.class_names[smallest]!r} of {dataset.name} has only {dataset.items_in(smallest)}; "
                f"lower shots or queries so that shots + queries <= {dataset.items_in(smallest)}"
            )
        self.groups: list[list[int]] | None = None
        if within_group:
            eligible = [members for members in dataset.group_classes().values() if len(members) >= ways]
            if not eligible:
                largest = max(len(m) for m in dataset.group_classes().values())
                raise ValueError(
                    f"within-group {ways}-way episodes need a group with {ways} classes but the largest group "
                    f"of {dataset.name} has {largest}; lower the ways or drop within-group sampling"
                )
            self.groups = eligible
        self.dataset = dataset
        self.ways, self.shots, self.queries, self.seed = ways, shots, queries, seed
        self.within_group = within_group

    def episode(self, index: int) -> Episode:
        """The ``index``-th episode of this sampler's seeded stream."""
        rng = np.random.default_rng([self.seed, index])
        if self.groups is not None:
            members = self.groups[rng.integers(len(self.groups))]
            classes = rng.choice(members, size=self.ways, replace=False)
        else:
            classes = rng.choice(self.dataset.num_classes, size=self.ways, replace=False)
        support, query = [], []
        held = self.dataset.held_out
        for c in classes:
            if held:  # queries from the held-out items 0..held-1, the support from the others
                query.append(tuple(int(i) for i in rng.permutation(held)[: self.queries]))
                others = held + rng.permutation(self.dataset.items_in(int(c)) - held)[: self.shots]
                support.append(tuple(int(i) for i in others))
                continue
            order = rng.permutation(self.dataset.items_in(int(c)))[: self.shots + self.queries]
            support.append(tuple(int(i) for i in order[: self.shots]))
            query.append(tuple(int(i) for i in order[self.shots :]))
        return Episode(tuple(int(c) for c in classes), tuple(support), tuple(query))

    def task(self, index: int) -> Task:
        return episode_task(self.dataset, self.episode(index))

    def batch(self, start: int, size: int) -> Task:
        """Tasks ``start .. start + size - 1`` stacked: a meta-batch with a leading task dim."""
        return episodes_batch(self.dataset, [self.episode(i) for i in range(start, start + size)])

    def fixed(self, count: int) -> FixedEpisodes:
        """The first ``count`` episodes of the stream, as a fixed evaluation set."""
        return FixedEpisodes(
            self.dataset, [self.episode(i) for i in range(count)], self.ways, self.shots, self.queries, self.seed
        )


def episode_task(dataset: ClassDataset, episode: Episode) -> Task:
    """Materialise one episode as a :class:`Task` (support ordered class by class)."""
    return episodes_batch(dataset, [episode])[0]


def episodes_batch(dataset: ClassDataset, episodes: list[Episode]) -> Task:
    """Materialise several episodes at once, stacked along a leading task dimension."""
    ways = len(episodes[0].classes)
    shots, queries = len(episodes[0].support[0]), len(episodes[0].query[0])
    classes = [c for e in episodes for c in e.classes]
    support_x = dataset.gather(classes, [s for e in episodes for s in e.support])
    query_x = dataset.gather(classes, [q for e in episodes for q in e.query])
    count = len(episodes)
    image = support_x.shape[1:]
    labels = torch.arange(ways)
    return Task(
        support_x.view(count, ways * shots, *image),
        labels.repeat_interleave(shots).expand(count, -1).contiguous(),
        query_x.view(count, ways * queries, *image),
        labels.repeat_interleave(queries).expand(count, -1).contiguous(),
        torch.tensor([e.classes for e in episodes], dtype=torch.long),
    )


class FixedEpisodes:
    """A fixed list of evaluation episodes over one dataset, readable from / writable to a manifest."""

    def __init__(
        self, dataset: ClassDataset, episodes: list[Episode], ways: int, shots: int, queries: int, seed: int | None
    ) -> None:
        self.dataset = dataset
        self.episodes = episodes
        self.ways, self.shots, self.queries, self.seed = ways, shots, queries, seed

    def __len__(self) -> int:
        return len(self.episodes)

    def batches(self, size: int):
        """Yield stacked tasks of up to ``size`` episodes each, in order."""
        for start in range(0, len(self.episodes), size):
            yield episodes_batch(self.dataset, self.episodes[start : start + size])

    def to_manifest(self) -> dict[str, Any]:
        names = self.dataset.class_names
        return {
            "format": "metalab-episodes/1",
            "dataset": self.dataset.name,
            "ways": self.ways,
            "shots": self.shots,
            "queries": self.queries,
            "seed": self.seed,
            "episodes": [
                {
                    "classes": [names[c] for c in e.classes],
                    "class_ids": list(e.classes),
                    "support": [list(s) for s in e.support],
                    "query": [list(q) for q in e.query],
                }
                for e in self.episodes
            ],
        }

    def save(self, path: str | Path) -> None:
        """Write the manifest atomically as JSON."""
        atomic_write_text(path, json.dumps(self.to_manifest()))

    @classmethod
    def load(cls, path: str | Path, dataset: ClassDataset) -> FixedEpisodes:
        """Read a manifest written by :meth:`save`; classes are matched to ``dataset`` by name."""
        try:
            manifest = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"episode manifest {path} does not exist") from None
        except IsADirectoryError:
            raise ValueError(f"episode manifest {path} is a folder; "
                             f"give the JSON file written by --save-manifest") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"episode manifest {path} is not valid JSON ({error}); "
                             f"write it again with --save-manifest") from None
        check_manifest(manifest, path)
        episodes = []
        for number, entry in enumerate(manifest["episodes"]):
            try:
                classes = tuple(dataset.class_index(name) for name in entry["classes"])
            except KeyError as error:
                raise ValueError(
                    f"episode {number} of {path} uses {error.args[0]}; score the manifest on the split it was written "
                    f"for ({manifest.get('dataset')}) with --split"
                ) from None
            for c, positions in [*zip(classes, entry["support"]), *zip(classes, entry["query"])]:
                if max(positions, default=-1) >= dataset.items_in(c):
                    raise ValueError(f"episode {number} of {path} asks for item {max(positions)} of class "
                                     f"{dataset.class_names[c]!r}, which has {dataset.items_in(c)} items")
            episodes.append(
                Episode(
                    classes,
                    tuple(tuple(s) for s in entry["support"]),
                    tuple(tuple(q) for q in entry["query"]),
                )
            )
        return cls(dataset, episodes, manifest["ways"], manifest["shots"], manifest["queries"], manifest.get("seed"))


def _json_kind(value: Any) -> str:
    """What a JSON value is, in the words of an error message."""
    kinds = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else kinds.get(type(value), type(value).__name__)


def check_manifest(manifest: Any, path: str | Path) -> None:
    """Refuse a manifest that :meth:`FixedEpisodes.save` could not have written, naming the first wrong field.

    The layout: an object with ``format`` ``"metalab-episodes/1"``, ``ways``, ``shots`` and ``queries``, and
    ``episodes``, a non-empty list of objects with ``classes`` (``ways`` class names), ``support`` (``ways`` lists
    of ``shots`` item indices) and ``query`` (``ways`` lists of ``queries`` item indices).
    """
    fix = "write it again with `metalab eval RUN --save-manifest FILE`"
    if not isinstance(manifest, dict):
        raise ValueError(f"episode manifest {path} holds {_json_kind(manifest)}, not the JSON object that "
                         f"--save-manifest writes; {fix}")
    if manifest.get("format") != "metalab-episodes/1":
        raise ValueError(f"{path} is not a metalab episode manifest (format {manifest.get('format')!r}, expected "
                         f"'metalab-episodes/1'); {fix}")
    counts = {}
    for key, low in (("ways", 1), ("shots", 1), ("queries", 0)):
        value = manifest.get(key)
        if type(value) is not int or value < low:
            raise ValueError(f"episode manifest {path}: {key!r} must be an integer >= {low}, got {value!r}; {fix}")
        counts[key] = value
    episodes = manifest.get("episodes")
    if not isinstance(episodes, list) or not episodes:
        raise ValueError(f"episode manifest {path}: 'episodes' must be a non-empty list, got {_json_kind(episodes)}"
                         f"{' (empty)' if episodes == [] else ''}; {fix}")
    ways = counts["ways"]
    for number, entry in enumerate(episodes):
        where = f"episode manifest {path}, episode {number}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where} is {_json_kind(entry)}, not an object with classes, support and query; {fix}")
        classes = entry.get("classes")
        if not isinstance(classes, list) or len(classes) != ways or not all(isinstance(c, str) for c in classes):
            raise ValueError(f"{where}: 'classes' must be a list of {ways} class names (the manifest's ways), got "
                             f"{_json_kind(classes)}{f' of {len(classes)}' if isinstance(classes, list) else ''}; "
                             f"{fix}")
        for part, per_class in (("support", counts["shots"]), ("query", counts["queries"])):
            lists = entry.get(part)
            shape_ok = isinstance(lists, list) and len(lists) == ways and all(
                isinstance(items, list) and len(items) == per_class
                and all(type(i) is int and i >= 0 for i in items) for items in lists)
            if not shape_ok:
                raise ValueError(f"{where}: {part!r} must be {ways} lists (one per class) of {per_class} item indices "
                                 f"(integers >= 0); {fix}")
