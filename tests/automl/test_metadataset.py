"""The meta-dataset file: deterministic, round-trips, and a partial, corrupted or damaged file is
detected and resumed rather than used."""
from __future__ import annotations

import shutil
import sqlite3

import numpy as np
import pytest

from conftest import TINY_PLAN
from metalab.automl.evaluate import cross_validate, fold_indices
from metalab.automl.metadataset import (
    BuildPlan,
    MetaDatasetError,
    build_metadataset,
    describe_metadataset,
    load_metadataset,
)
from metalab.automl.sources import load_task


def assert_rebuild_redoes_only(path, task: str, reference) -> None:
    """Building again into ``path`` evaluates ``task`` alone and ends with the reference file's scores."""
    redone: list[str] = []
    build_metadataset(path, TINY_PLAN, progress=False, on_task=redone.append)
    assert redone == [task]
    np.testing.assert_array_equal(load_metadataset(path).scores, load_metadataset(reference).scores)


def test_build_is_deterministic_given_its_seed(tiny_metadataset_file, tmp_path):
    again = load_metadataset(build_metadataset(tmp_path / "again.sqlite", TINY_PLAN, progress=False))
    first = load_metadataset(tiny_metadataset_file)
    assert again.tasks == first.tasks == ["sklearn/iris", "sklearn/wine"]
    np.testing.assert_array_equal(again.scores, first.scores)
    assert first.metafeatures.equals(again.metafeatures)


def test_file_round_trips_the_scores_of_an_independent_evaluation(tiny_metadataset_file):
    meta = load_metadataset(tiny_metadataset_file)
    assert meta.scores.shape == (2, 10)  # 5 learners x (1 Sobol point + scikit-learn's default)
    task = load_task("sklearn/wine")
    config = meta.configurations[3]
    folds = cross_validate(config, task.x, task.y, fold_indices(task.name, task.y))
    assert meta.scores[1, 3] == pytest.approx(np.mean([f.score for f in folds]), abs=1e-12)
    assert meta.metafeatures.shape[0] == 2 and meta.metafeatures.notna().sum(axis=1).min() > 50


def test_killed_build_is_refused_then_resumed_without_redoing_finished_tasks(tiny_metadataset_file, tmp_path):
    path = tmp_path / "partial.sqlite"

    def stop(name):
        raise KeyboardInterrupt  # the build is killed right after its first task is committed

    with pytest.raises(KeyboardInterrupt):
        build_metadataset(path, TINY_PLAN, progress=False, on_task=stop)
    with pytest.raises(MetaDatasetError, match="partial: 1 of 2 tasks"):
        load_metadataset(path)
    assert "partial (1 of 2 tasks)" in describe_metadataset(path)
    assert_rebuild_redoes_only(path, "sklearn/wine", tiny_metadataset_file)


def test_corrupted_file_is_refused_with_the_fix(tiny_metadataset_file, tmp_path):
    path = tmp_path / "corrupted.sqlite"
    data = bytearray(tiny_metadataset_file.read_bytes())
    data[:100] = b"\x00" * 100  # the SQLite header is gone
    path.write_bytes(bytes(data))
    with pytest.raises(MetaDatasetError, match="corrupted.*rebuild"):
        load_metadataset(path)


def test_changed_rows_are_detected_and_redone(tiny_metadataset_file, tmp_path):
    path = tmp_path / "damaged.sqlite"
    shutil.copy(tiny_metadataset_file, path)
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE results SET score = 0.5 WHERE task = 'sklearn/iris' AND fold = 0")
    connection.close()
    with pytest.raises(MetaDatasetError, match="damaged.*sklearn/iris"):
        load_metadataset(path)
    assert_rebuild_redoes_only(path, "sklearn/iris", tiny_metadataset_file)


def test_other_settings_are_refused(tiny_metadataset_file, tmp_path):
    path = tmp_path / "other.sqlite"
    shutil.copy(tiny_metadataset_file, path)
    with pytest.raises(MetaDatasetError, match="other settings.*seed"):
        build_metadataset(path, BuildPlan(TINY_PLAN.tasks, seed=1, per_learner=1), progress=False)


def test_several_processes_build_the_same_file(tiny_metadataset_file, tmp_path):
    parallel = load_metadataset(build_metadataset(tmp_path / "parallel.sqlite", TINY_PLAN, jobs=2, progress=False))
    np.testing.assert_array_equal(parallel.scores, load_metadataset(tiny_metadataset_file).scores)
