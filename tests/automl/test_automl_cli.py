"""`metalab automl ...` as a user runs it: clear errors for unusable tables, and recommend -> tune ->
report on a small table with the small meta-dataset."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conftest import SMALL_METADATASET
from metalab.cli import main


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["automl", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def table(tmp_path) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=60), "b": rng.normal(size=60),
                          "colour": rng.choice(["red", "blue"], 60)})
    frame["y"] = np.where(frame.a + 0.5 * (frame.colour == "red") > 0.2, "yes", "no")
    return frame


@pytest.mark.parametrize(
    "content, target, message",
    [
        (b"\x00\x9f\x92\x96\xff\xfe\x00\x01binary", "y", "not a readable CSV table"),
        (b"a,b,y\n1,2,yes\n3,4", "z", "has no column 'z'; its columns are: a, b, y"),
        (b"", "y", "is empty"),
        (b"a,b,y\n", "y", "has no rows"),
    ],
    ids=["bad-csv", "missing-target", "empty-file", "header-only"],
)
def test_unusable_tables_are_clear_errors(capsys, tmp_path, content, target, message):
    path = tmp_path / "table.csv"
    path.write_bytes(content)
    code, _, err = run(capsys, "recommend", str(path), "--target", target, "--metadataset", str(SMALL_METADATASET))
    assert code == 1
    assert err.startswith("metalab: error: ") and message in err, err


def test_target_that_is_not_a_class_label_is_a_clear_error(capsys, tmp_path, table):
    continuous = table.assign(y=table.a * 3.7)
    free_text = table.assign(y=[f"note {i}" for i in range(len(table))])
    for frame, message in ((continuous, "is a continuous number"), (free_text, "is not a class label")):
        path = tmp_path / "table.csv"
        frame.to_csv(path, index=False)
        code, _, err = run(capsys, "tune", str(path), "--target", "y", "--warm-start", "none", "--trials", "2",
                           "--out", str(tmp_path / "run"))
        assert code == 1 and message in err, err


def test_recommend_tune_report(capsys, tmp_path, table):
    path = tmp_path / "table.csv"
    table.to_csv(path, index=False)
    code, out, _ = run(capsys, "recommend", str(path), "--target", "y", "--top", "3", "--json",
                       "--metadataset", str(SMALL_METADATASET))
    assert code == 0
    recommended = json.loads(out)
    assert len(recommended["configurations"]) == 3
    assert recommended["best_learner"] in ("logreg", "svm", "knn", "rf", "hgb")
    scores = [c["predicted_balanced_accuracy"] for c in recommended["configurations"]]
    assert scores == sorted(scores, reverse=True)

    run_dir = tmp_path / "run"
    code, out, err = run(capsys, "tune", str(path), "--target", "y", "--trials", "6", "--warm-start", "knn",
                         "--out", str(run_dir), "--metadataset", str(SMALL_METADATASET))
    assert code == 0, err
    report = json.loads((run_dir / "report.json").read_text())
    assert len(report["trials"]) == 6 and report["enqueued"]
    # the warm-start configurations were the first trials
    first = report["trials"][0]
    assert first["learner"] == report["enqueued"][0].split("-")[0]
    assert report["best"]["score"] == max(t["score"] for t in report["trials"])
    import joblib

    model = joblib.load(run_dir / "model.joblib")
    assert model.predict(table.drop(columns=["y"])).shape == (60,)

    code, out, _ = run(capsys, "report", str(run_dir))
    assert code == 0 and (run_dir / "curve.png").stat().st_size > 1000


def test_tune_resumes_a_shared_study_up_to_the_total_number_of_trials(capsys, tmp_path, table):
    path = tmp_path / "table.csv"
    table.to_csv(path, index=False)
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    for trials in (3, 5):  # a second process (here: a second call) joins the study and stops at 5 in total
        code, _, err = run(capsys, "tune", str(path), "--target", "y", "--trials", str(trials), "--warm-start", "none",
                           "--storage", storage, "--study", "shared", "--out", str(tmp_path / "run"))
        assert code == 0, err
    assert len(json.loads((tmp_path / "run" / "report.json").read_text())["trials"]) == 5


def test_data_says_what_is_built_and_where(capsys, tmp_path):
    code, out, _ = run(capsys, "data", "--metadataset", str(SMALL_METADATASET))
    assert code == 0 and "complete" in out and "tasks 16/16" in out
    code, out, _ = run(capsys, "data", "--metadataset", str(tmp_path / "none.sqlite"))
    assert code == 0 and "build-metadataset" in out


@pytest.mark.parametrize("warm_start", ["portfolio-pmf", "metafeature-pmf"])
def test_tune_with_a_sequential_pmf_warm_start_runs_the_portfolio_first(capsys, tmp_path, table, warm_start):
    from metalab.automl.defaults import greedy_portfolio
    from metalab.automl.metadataset import load_metadataset
    from metalab.automl.metafeature_pmf import START
    from metalab.automl.portfolio_pmf import PORTFOLIO_START

    start = PORTFOLIO_START if warm_start == "portfolio-pmf" else START
    path = tmp_path / "table.csv"
    table.to_csv(path, index=False)
    run_dir = tmp_path / "run"
    trials = start + 2
    code, _, err = run(capsys, "tune", str(path), "--target", "y", "--trials", str(trials), "--warm-start",
                       warm_start, "--out", str(run_dir), "--metadataset", str(SMALL_METADATASET))
    assert code == 0, err
    report = json.loads((run_dir / "report.json").read_text())
    assert report["warm_start"] == warm_start
    meta = load_metadataset(SMALL_METADATASET)
    portfolio = [meta.configurations[i].id for i in greedy_portfolio(meta, start)]
    assert report["enqueued"][:start] == portfolio
    assert len(report["enqueued"]) == trials == len(report["trials"]) and len(set(report["enqueued"])) == trials
    # every trial ran the configuration the optimiser chose, in order
    assert [t["learner"] for t in report["trials"]] == [c.split("-")[0] for c in report["enqueued"]]

