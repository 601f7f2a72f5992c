"""Fixtures of the automl tests: the committed small meta-dataset, and tiny ones built in seconds."""
from __future__ import annotations

from pathlib import Path

import pytest

from metalab.automl.metadataset import BuildPlan, MetaDataset, build_metadataset, load_metadataset

#: Built by
#: `metalab automl build-metadataset --out tests/automl/data/small-metadataset.sqlite --tasks 16 --per-learner 4`
SMALL_METADATASET = Path(__file__).parent / "data" / "small-metadataset.sqlite"
#: Two of scikit-learn's tables and one design point per learner (plus the defaults): a build of a few seconds.
TINY_PLAN = BuildPlan(["sklearn/iris", "sklearn/wine"], seed=0, per_learner=1)


@pytest.fixture(scope="session")
def small_meta() -> MetaDataset:
    return load_metadataset(SMALL_METADATASET)


@pytest.fixture(scope="session")
def tiny_metadataset_file(tmp_path_factory) -> Path:
    """A finished tiny meta-dataset; tests that damage it copy it first."""
    path = tmp_path_factory.mktemp("tiny") / "tiny.sqlite"
    return build_metadataset(path, TINY_PLAN, progress=False)
