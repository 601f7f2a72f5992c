"""Meta-features of a classification table, computed by pymfe (Alcobaça et al., JMLR 2020).

Groups: general (sizes, class counts), statistical (correlations, skewness, ...), information-
theoretic (class and attribute entropies, mutual information), landmarking (the scores of cheap
learners: 1-NN, naive Bayes, decision stumps, ...) and model-based (the shape of a decision tree);
each multi-valued meta-feature summarised by its mean and standard deviation.
"""
from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
import pandas as pd

GROUPS = ("general", "statistical", "info-theory", "landmarking", "model-based")
SUMMARY = ("mean", "sd")


def numeric_matrix(x: pd.DataFrame) -> np.ndarray:
    """The table as floats (rows x columns'): categoricals one-hot encoded (at most 16 levels), missing
    values replaced by the column's median (0 for an all-missing column)."""
    categorical = [c for c in x.columns if not pd.api.types.is_numeric_dtype(x[c]) or pd.api.types.is_bool_dtype(x[c])]
    encoded = (pd.get_dummies(x.astype({c: str for c in categorical}), columns=categorical, dtype=float)
               if categorical else x)
    matrix = encoded.to_numpy(dtype=float, copy=True)
    medians = np.nanmedian(np.where(np.isnan(matrix).all(0), 0.0, matrix), axis=0) if len(matrix) else np.zeros(0)
    rows, cols = np.nonzero(np.isnan(matrix))
    matrix[rows, cols] = medians[cols]
    return matrix


def metafeatures(x: pd.DataFrame, y: np.ndarray, seed: int = 0) -> dict[str, float]:
    """pymfe's meta-features of the table ``x`` (rows x features) with labels ``y`` (shape ``(rows,)``).

    Returns ``{name: value}``; a meta-feature pymfe cannot compute on this table is NaN (the meta-
    models impute it from the other datasets).
    """
    from pymfe.mfe import MFE

    matrix = numeric_matrix(x)
    extractor = MFE(groups=list(GROUPS), summary=list(SUMMARY), random_state=seed)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            extractor.fit(matrix, np.asarray(y), suppress_warnings=True, verbose=0)
            names, values = extractor.extract(suppress_warnings=True)
        except Exception as error:  # pymfe failing on one table leaves its meta-features NaN
            warnings.warn(f"pymfe could not describe this table ({error}); its meta-features are NaN", stacklevel=2)
            names, values = [], []
    result = {}
    for name, value in zip(names, values):
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = float("nan")
        result[str(name)] = number if np.isfinite(number) else float("nan")
    return result
