"""A user's table (CSV file or DataFrame) turned into a classification task, with an error that
names the problem and the fix for each way it can be unusable."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from metalab.automl.sources import TabularTask

#: A target with more distinct values than this, all of them numbers, is a regression target.
MAX_CLASSES = 50


class TableError(ValueError):
    """The table cannot be used as a classification task; the message says why and what to do."""


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a comma-separated file with a header row; a missing, binary, unparsable or empty file
    is a :class:`TableError`."""
    import csv

    path = Path(path)
    if not path.is_file():
        raise TableError(f"no file {path}; pass the path of a CSV file with a header row")
    head = path.open("rb").read(1 << 16)
    if not head.strip():
        raise TableError(f"{path} is empty; it needs a header row and at least one row per class")
    try:
        if b"\x00" in head:
            raise UnicodeDecodeError("utf-8", head, head.index(b"\x00"), head.index(b"\x00") + 1,
                                     "a NUL byte: binary data")
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, UnicodeDecodeError, csv.Error) as error:
        raise TableError(f"{path} is not a readable CSV table ({str(error).splitlines()[0]}); "
                         "save it as comma-separated UTF-8 text with one header row") from None
    return frame


def classification_task(frame: pd.DataFrame, target: str, name: str = "table", min_class_rows: int = 3) -> TabularTask:
    """The task of predicting column ``target`` of ``frame`` from its other columns.

    Class labels may be strings or integers. Refused, each with its own message: an empty table, a
    missing target column, a target that is not a class label (free text with a different value on
    most rows, or a continuous number), fewer than two classes, a class with fewer rows than the
    cross-validation needs, no feature column.
    """
    if frame.empty or len(frame.columns) == 0:
        raise TableError(f"{name} has no rows; it needs a header row and at least {min_class_rows} rows per class")
    if target not in frame.columns:
        raise TableError(f"{name} has no column {target!r}; its columns are: {', '.join(map(str, frame.columns))}. "
                         "Pass the target with --target NAME")
    labels = frame[target]
    known = labels.notna()
    if not known.any():
        raise TableError(f"the target column {target!r} of {name} is empty")
    frame = frame[known].reset_index(drop=True)
    labels = labels[known].reset_index(drop=True)
    distinct = labels.nunique()
    numeric = pd.api.types.is_numeric_dtype(labels) and not pd.api.types.is_bool_dtype(labels)
    if numeric and (distinct > MAX_CLASSES or not np.allclose(labels, np.round(labels))):
        raise TableError(f"the target {target!r} of {name} is a continuous number ({distinct} distinct values), "
                         "not a class label; classification needs a column of classes (strings or integers)")
    if not numeric and distinct > max(MAX_CLASSES, 0.5 * len(labels)):
        raise TableError(f"the target {target!r} of {name} is not a class label: it has {distinct} distinct values "
                         f"in {len(labels)} rows (free text or an identifier); pick the column of classes")
    if distinct < 2:
        raise TableError(f"the target {target!r} of {name} has a single class ({labels.iloc[0]!r}); "
                         "classification needs at least two")
    counts = labels.astype(str).value_counts()
    if counts.min() < min_class_rows:
        raise TableError(f"class {counts.idxmin()!r} of {target!r} has {counts.min()} row(s); each class needs at "
                         f"least {min_class_rows} for {min_class_rows}-fold cross-validation (drop or merge it)")
    x = frame.drop(columns=[target])
    if x.shape[1] == 0:
        raise TableError(f"{name} has no feature column besides the target {target!r}")
    for column in x.columns:
        if not pd.api.types.is_numeric_dtype(x[column]):
            x[column] = x[column].astype(str).where(x[column].notna(), None).astype(object)
    y, _ = pd.factorize(labels.astype(str), sort=True)
    return TabularTask(name, x, y.astype(np.int64), target, "user")


def class_names(frame: pd.DataFrame, target: str) -> list[str]:
    """The class labels in the order of the integer codes of :func:`classification_task`."""
    return sorted(frame[target].dropna().astype(str).unique())
