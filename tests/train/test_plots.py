"""Learning curves from a run's metrics.jsonl (what `metalab plot` draws for classification runs)."""
from __future__ import annotations

import json

import pytest
from PIL import Image

from metalab.train.plots import plot_learning_curves, read_metrics


def write_metrics(run, records) -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + '{"kind": "tra')  # cut short


def test_curves_of_a_classification_run_are_two_panels(tmp_path):
    records = [{"kind": "train", "step": s, "loss": 2.0 / s, "accuracy": 1 - 1.0 / s} for s in range(1, 11)]
    records += [{"kind": "val", "step": s, "accuracy": 0.5 + s / 40, "ci95": 0.05} for s in (5, 10)]
    records.append({"kind": "test", "step": 10, "accuracy": 0.7, "ci95": 0.02})
    write_metrics(tmp_path / "run", records)
    assert read_metrics(tmp_path / "run") == records  # the line cut short by a crash is skipped
    path = plot_learning_curves(tmp_path / "run")
    assert path == tmp_path / "run" / "curves.png"
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 1.5 * image.height


def test_curves_of_a_regression_run_plot_its_mse(tmp_path):
    write_metrics(tmp_path / "run", [{"kind": "train", "step": 1, "loss": 3.0},
                                     {"kind": "val", "step": 1, "mse": 0.5, "ci95": 0.1}])
    assert plot_learning_curves(tmp_path / "run", tmp_path / "out" / "c.png").is_file()


def test_a_run_without_records_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="metrics.jsonl does not exist: the run has no logged metrics yet"):
        plot_learning_curves(tmp_path / "none")
    write_metrics(tmp_path / "empty", [])
    with pytest.raises(ValueError, match="holds no training or validation records to plot"):
        plot_learning_curves(tmp_path / "empty")


def test_an_unwritable_path_is_named(tmp_path):
    write_metrics(tmp_path / "run", [{"kind": "train", "step": 1, "loss": 3.0}])
    with pytest.raises(ValueError, match=f"cannot write the plot to {tmp_path}"):
        plot_learning_curves(tmp_path / "run", tmp_path)  # a folder


def test_a_path_without_a_suffix_is_the_file_written(tmp_path):
    """matplotlib wrote `--out curves` to curves.png, and `metalab plot` printed `curves`."""
    write_metrics(tmp_path / "run", [{"kind": "train", "step": 1, "loss": 3.0}])
    path = plot_learning_curves(tmp_path / "run", tmp_path / "curves")
    assert path.is_file() and not (tmp_path / "curves.png").exists()
    with Image.open(path) as image:
        assert image.format == "PNG"
