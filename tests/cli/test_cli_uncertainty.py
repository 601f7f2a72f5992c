"""The uncertainty metrics through the command line: `eval --json` carries them, the plain line shows them,
`plot` draws the reliability diagram, from a tiny trained run."""
from __future__ import annotations

import json

from PIL import Image

from metalab.cli import main
from test_cli import folder_overrides


def metalab(*args: str, capsys) -> str:
    """The command's stdout, run in this process (a subprocess per command would take most of the test's time)."""
    capsys.readouterr()
    assert main(list(args)) == 0
    return capsys.readouterr().out


def test_eval_json_and_plot_carry_the_uncertainty(image_folders, tmp_path, capsys, one_thread):
    run = tmp_path / "run"
    metalab("train", "omniglot-protonet-5w1s", *folder_overrides(image_folders, run), "train.steps=2",
            "train.val_every=0", "run.tensorboard=false", capsys=capsys)
    saved = json.loads((run / "results.json").read_text())["test"]
    assert sum(saved["reliability"]["count"]) == 20 * 5 * 3  # episodes x ways x queries, pooled

    scored = json.loads(metalab("eval", str(run), "--episodes", "12", "--json", capsys=capsys))
    for name in ("accuracy", "nll", "ece", "brier"):
        assert isinstance(scored[name], float) and isinstance(scored[f"{name}_ci95" if name != "accuracy" else "ci95"],
                                                               float)
    assert 0 <= scored["ece"] <= 1 and 0 <= scored["brier"] <= 2 and scored["nll"] > 0
    assert 0 <= scored["ece_pooled"] <= 1 and len(scored["reliability"]["count"]) == 15
    plain = metalab("eval", str(run), "--episodes", "12", capsys=capsys)
    assert "NLL" in plain and "ECE" in plain and "Brier" in plain

    printed = metalab("plot", str(run), capsys=capsys).split()
    assert printed == [str(run / "curves.png"), str(run / "reliability.png")]
    with Image.open(run / "reliability.png") as image:
        assert image.format == "PNG"


def test_predict_gives_a_regression_run_s_central_interval(tmp_path, capsys, one_thread):
    run = tmp_path / "run"
    metalab("train", "sinusoid-llama-5shot", "train.steps=2", "train.val_every=0", "eval.episodes=2",
            "learner.mlp_hidden=[8]", "learner.predictive_samples=3", "run.tensorboard=false", "train.progress=false",
            f"run.dir={run}", capsys=capsys)
    (tmp_path / "support.csv").write_text("x,y\n" + "".join(f"{x},{x / 2}\n" for x in (-2, -1, 0, 1, 2)))
    (tmp_path / "query.csv").write_text("-0.5\n3.0\n")
    rows = json.loads(metalab("predict", str(run), "--support", str(tmp_path / "support.csv"), "--query",
                              str(tmp_path / "query.csv"), "--json", capsys=capsys))
    assert [row["x"] for row in rows] == [[-0.5], [3.0]]
    for row in rows:
        (low,), (high,) = row["interval_95"]
        assert low < row["prediction"][0] < high  # a mixture of Gaussians about its draws: the mean lies inside
    plain = metalab("predict", str(run), "--support", str(tmp_path / "support.csv"), "--query",
                    str(tmp_path / "query.csv"), capsys=capsys)
    assert plain.count("[") == 2
