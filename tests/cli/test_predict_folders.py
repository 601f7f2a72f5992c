"""`metalab predict --model NAME` as a user runs it on their own files: a support tree and a nested query tree of
mixed JPEG/PNG/RGBA/16-bit/grayscale drawings, each conversion reported once, CSV and JSON outputs, and the errors
(an empty class folder, one class, a corrupt image, an unconvertible mode, a bad output name) with nothing written."""
from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from metalab.cli import main

MODEL = "omniglot-protonet-5w1s"
INVERTED = "inverted to match omniglot's light strokes on dark (data.invert_user_images)"


def drawing(seed: int, size: int = 105) -> Image.Image:
    """An Omniglot-like drawing: a few thick black strokes on white, mode "L"."""
    rng = random.Random(seed)
    image = Image.new("L", (size, size), 255)
    draw = ImageDraw.Draw(image)
    for _ in range(3):
        draw.line([(rng.randrange(10, size - 10), rng.randrange(10, size - 10)) for _ in range(3)], fill=0,
                  width=size // 12)
    return image


def save(image: Image.Image, path: Path, kind: str) -> Path:
    """``image`` (mode L, black on white) written as ``kind``: png (L), jpeg (RGB), rgba (black on transparent),
    16bit (I;16 PNG) or small (L at 28x28)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "rgba":
        image = Image.merge("RGBA", [image.point(lambda v: 0)] * 3 + [image.point(lambda v: 255 - v)])
    elif kind == "16bit":
        image = Image.fromarray(np.asarray(image, dtype=np.uint16) * 257)
    elif kind == "jpeg":
        image = image.convert("RGB")
    elif kind == "small":
        image = image.resize((28, 28), Image.Resampling.LANCZOS)
    image.save(path, **({"quality": 95} if kind == "jpeg" else {}))
    return path


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> dict[str, Path]:
    """support/<class>/ (one drawing per class, each class in another format) and a nested query tree: each query is
    another class's drawing in another format; hidden files and folders and non-images beside them."""
    root = tmp_path_factory.mktemp("predict")
    kinds = {"alpha": ("png", "support.png"), "beta": ("jpeg", "support.jpg"), "gamma": ("rgba", "support.png"),
             "delta": ("16bit", "support.png"), "eps": ("small", "support.png")}
    for seed, (name, (kind, file)) in enumerate(kinds.items()):
        save(drawing(seed), root / "support" / name / file, kind)
    queries = root / "queries"
    save(drawing(0), queries / "b" / "deep" / "alpha-as-rgba.png", "rgba")
    save(drawing(1), queries / "a" / "beta-as-png.PNG", "png")
    save(drawing(2), queries / "gamma-as-jpeg.jpeg", "jpeg")
    save(drawing(3), queries / "a" / "delta-as-small.png", "small")
    save(drawing(4), queries / "eps-as-16bit.png", "16bit")
    save(drawing(0), queries / ".hidden.png", "png")
    save(drawing(0), queries / ".cache" / "alpha.png", "png")
    (queries / "notes.txt").write_text("not an image")
    return {"support": root / "support", "queries": queries}


def predict(capsys, *args: str) -> tuple[int, str, str]:
    status = main(["predict", "--model", MODEL, *args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_a_nested_tree_of_mixed_files_is_classified_and_each_conversion_said_once(capsys, tree, tmp_path):
    status, out, err = predict(capsys, "--support", str(tree["support"]), "--query", str(tree["queries"]), "--json",
                               "--output", str(tmp_path / "p.csv"))
    assert status == 0, err
    rows = json.loads(out)
    queries = tree["queries"]
    expected = {"a/beta-as-png.PNG": "beta", "a/delta-as-small.png": "delta", "b/deep/alpha-as-rgba.png": "alpha",
                "eps-as-16bit.png": "eps", "gamma-as-jpeg.jpeg": "gamma"}  # sorted by path; hidden and .txt skipped
    assert [row["query"] for row in rows] == [str(queries / name) for name in expected]
    assert [row["class"] for row in rows] == list(expected.values())  # the same drawing, whatever its format
    assert all(0.2 < row["probability"] <= 1 for row in rows)
    conversions = [line for line in err.splitlines() if "to the learner's input" in line]
    said = "metalab: converted {} to the learner's input: {}, " + INVERTED
    assert sorted(conversions) == sorted(said.format(n, words) for n, words in [
        ("4 images", "grayscale -> grayscale 28x28"),  # support alpha and eps, queries beta and delta
        ("2 images", "RGB -> grayscale 28x28"),
        ("2 images", "RGBA -> grayscale 28x28 (transparent pixels on white)"),
        ("2 images", "16-bit grayscale -> grayscale 28x28 (scaled to 8 bits)")])
    with open(tmp_path / "p.csv", newline="") as file:
        written = list(csv.DictReader(file))
    assert [(r["query"], r["class"], float(r["probability"])) for r in written] == [
        (r["query"], r["class"], r["probability"]) for r in rows]
    assert predict(capsys, "--support", str(tree["support"]), "--query", str(queries / "eps-as-16bit.png"),
                   "--output", str(tmp_path / "p.json"))[0] == 0
    assert json.loads((tmp_path / "p.json").read_text()) == rows[3:4]


def test_the_plain_output_is_one_line_per_file(capsys, tree):
    status, out, err = predict(capsys, "--support", str(tree["support"]), "--query",
                               str(tree["queries"] / "gamma-as-jpeg.jpeg"))
    query, name, probability = out.rstrip("\n").split("\t")
    assert status == 0 and query.endswith("gamma-as-jpeg.jpeg") and name == "gamma" and 0 < float(probability) <= 1
    assert f"predicting with zoo model {MODEL} (test accuracy " in err


def copy_tree(source: Path, target: Path) -> Path:
    for path in source.rglob("*"):
        if path.is_file():
            (target / path.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
            (target / path.relative_to(source)).write_bytes(path.read_bytes())
    return target


@pytest.mark.parametrize("case", ["empty class", "one class", "corrupt query", "LAB query", "corrupt support"])
def test_errors_name_the_problem_and_write_nothing(capsys, tree, tmp_path, case):
    support = copy_tree(tree["support"], tmp_path / "support")
    queries = copy_tree(tree["queries"], tmp_path / "queries")
    message = {"empty class": f"class folder {support / 'zeta'} holds no images",
               "one class": "holds one class ('alpha'): an episode needs at least two classes",
               "corrupt query": f"cannot decode image {queries / 'a' / 'broken.png'}",
               "LAB query": f"image {queries / 'lab.tif'} has mode LAB (3 channels), which cannot be converted to "
                            f"grayscale",
               "corrupt support": f"cannot decode image {support / 'beta' / 'support.jpg'}"}[case]
    if case == "empty class":
        (support / "zeta").mkdir()
    elif case == "one class":
        for name in ("beta", "gamma", "delta", "eps"):
            for path in (support / name).iterdir():
                path.unlink()
            (support / name).rmdir()
    elif case == "corrupt query":
        (queries / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    elif case == "LAB query":
        Image.new("LAB", (30, 30)).save(queries / "lab.tif")
    else:
        data = (support / "beta" / "support.jpg").read_bytes()
        (support / "beta" / "support.jpg").write_bytes(data[:len(data) // 3])
    output = tmp_path / "out.csv"
    status, out, err = predict(capsys, "--support", str(support), "--query", str(queries), "--output", str(output))
    assert status == 1 and out == "" and message in err and not output.exists()
    assert list(tmp_path.glob(".out.csv*")) == []


@pytest.mark.parametrize("args, message", [
    (["--output", "predictions.txt"], "--output predictions.txt: give a file name ending in .csv or .json"),
    (["--checkpoint", "best.pt"], "--checkpoint picks a checkpoint of a run directory; --model has none to pick"),
])
def test_usage_errors(capsys, tree, args, message):
    status, out, err = predict(capsys, "--support", str(tree["support"]), "--query", str(tree["queries"]), *args)
    assert status == 1 and out == "" and message in err


def test_a_fixed_head_takes_at_most_its_classes(capsys, tree):
    status = main(["predict", "--model", "omniglot-maml-5w1s", "--support", str(tree["support"]), "--query",
                   str(tree["queries"] / "gamma-as-jpeg.jpeg")])
    assert status == 0 and capsys.readouterr().out.split("\t")[1] == "gamma"  # 5 classes: as many as its head
    support = tree["support"].parent / "six-classes"
    for name in ("alpha", "beta", "gamma", "delta", "eps", "zeta"):
        save(drawing(len(name)), support / name / "one.png", "png")
    status = main(["predict", "--model", "omniglot-maml-5w1s", "--support", str(support), "--query", str(support)])
    assert status == 1 and (f"--support {support} holds 6 classes, but this learner's classifier head has 5 outputs: "
                            f"give at most 5 class folders") in capsys.readouterr().err


def test_a_run_or_a_model(capsys, tree, tmp_path):
    assert main(["predict", "--support", str(tree["support"]), "--query", str(tree["queries"])]) == 1
    assert "give a run directory, --model NAME (a model of the zoo: `metalab zoo list`) or --backbone SPEC" in (
        capsys.readouterr().err)
    assert main(["predict", str(tmp_path), "--model", MODEL, "--support", str(tree["support"]), "--query",
                 str(tree["queries"])]) == 1
    assert "only one of them, not a run directory and --model" in capsys.readouterr().err
