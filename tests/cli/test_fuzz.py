"""Property-based fuzzing of the command line and the config (Hypothesis): whatever a user types, `metalab`
answers with its result, a `metalab: error:` line (status 1) or argparse's usage error (status 2), never a
traceback. Any other exception fails the test with the command line that raised it.

Bounded: a fixed number of examples per command and a deadline per example, a few seconds in all.
Not fuzzed: `train` past its config (it would train), `data --download` (the network), the files that
`eval --save-manifest` writes (their OS errors are handled with the other writes), and numbers above 64 (a
learner.hidden or data.image_size that large asks for more memory than a test machine has).
"""
from __future__ import annotations

import io
import json
import logging
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import fields
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from metalab.algorithms.metric.protonet import ProtoNetOptions
from metalab.cli import main
from metalab.config import BaseConfig
from testdata import make_class_dataset, tiny_run, write_image_folder


def fuzz(examples: int) -> settings:
    """At most ``examples`` command lines, each answered within the deadline (generous: the CPU may be shared);
    new ones every run (no example database), the failing one printed."""
    return settings(max_examples=examples, deadline=timedelta(seconds=30), database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def schema_keys() -> list[str]:
    """Every section and key of a ProtoNet config, as an override names them."""
    keys = []
    for section in fields(BaseConfig):
        keys.append(section.name)
        default = section.default_factory() if callable(section.default_factory) else None  # type: ignore[misc]
        keys += [f"{section.name}.{f.name}" for f in fields(default)] if default is not None else []
    return keys + ["learner"] + [f"learner.{f.name}" for f in fields(ProtoNetOptions)]


def small(word: str) -> bool:
    """Not a number above 64: sizes that big (learner.hidden=100000, data.image_size=1000) ask for more memory than
    a test machine has, which is not what this fuzz looks for."""
    try:
        return not abs(float(word)) > 64
    except (ValueError, OverflowError):
        return True


#: what a command-line word may hold: any text an argv can carry (no NUL, no lone surrogate), no large number
WORDS = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12).filter(small)
#: values as users write them, YAML and OmegaConf syntax included, right and wrong
VALUES = st.one_of(
    st.integers(-3, 3).map(str), st.sampled_from(["0", "1", "2", "64", "-1", "1e-3", "nan", "inf", "-inf"]),
    st.sampled_from(["true", "false", "null", "???", "", "[1,2]", "[]", "{}", "{a: 1}", "${train.seed}",
                     "${nothing}", "${", "}", "'", '"', "[", "cpu", "cuda", "tpu9", "meta", "protonet", "adam",
                     "euclidean", "cosine", "fp16", "accel", "..", "~", "/"]),
    WORDS,
)
KEYS = st.one_of(st.sampled_from(schema_keys()), st.sampled_from(["", ".", "a..b", "train.", ".steps", "learner.x",
                                                                  "train.steps.x", "eval.batch", "learner.task_chunk"]),
                 WORDS)
OVERRIDES = st.one_of(st.just([]), st.lists(st.one_of(st.builds("{}={}".format, KEYS, VALUES), WORDS), max_size=3))


@pytest.fixture(autouse=True)
def _in_a_scratch_folder(tmp_path, monkeypatch):
    """Relative paths that the fuzz makes up (`plot --out`) land in a temporary folder, not the checkout."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def places(tmp_path_factory) -> dict[str, str]:
    """A trained run and the paths a user could name: folders, files, manifests, right and wrong."""
    root = tmp_path_factory.mktemp("fuzz")
    folders = {split: write_image_folder(root / split, make_class_dataset(classes=8, items=6, seed=seed))
               for seed, split in enumerate(("train", "val", "test"))}
    run = tiny_run(folders, root / "run")
    single = root / "single" / "only"
    single.mkdir(parents=True)
    image = sorted((folders["test"] / sorted(p.name for p in folders["test"].iterdir())[0]).iterdir())[0]
    (single / image.name).write_bytes(image.read_bytes())
    (root / "empty").mkdir()
    (root / "notes.txt").write_text("not an image")
    (root / "broken.png").write_bytes(b"not a png")
    (root / "list.json").write_text("[1, 2]")
    (root / "half.json").write_text('{"format": "metalab-episodes/1", "ways": 5')
    main(["eval", str(run), "--episodes", "2", "--save-manifest", str(root / "good.json"), "-q"])
    return {"run": str(run), "test": str(folders["test"]), "image": str(image), "single": str(single.parent),
            "class": str(image.parent), **{name: str(root / name) for name in (
                "empty", "notes.txt", "broken.png", "list.json", "half.json", "good.json", "missing", "missing.json")}}


def answers_cleanly(argv: list[str]) -> None:
    """Run `metalab ARGV` in this process; fail on anything but a result, a `metalab: error:` or a usage error."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            status = main(argv)
        except SystemExit as exited:  # argparse: usage errors (2), --help and --version (0)
            assert exited.code in (0, 2), (argv, exited.code, err.getvalue())
            assert exited.code == 0 or err.getvalue().startswith("usage: metalab"), (argv, err.getvalue())
            event(f"{argv[0] if argv else ''} usage {exited.code}")
            return
    verbose = logging.getLogger("metalab").level == logging.DEBUG  # -v adds the traceback to an error's line
    assert verbose or "Traceback" not in err.getvalue(), (argv, err.getvalue())
    assert status in (0, 1), (argv, status)
    event(f"{argv[0] if argv else ''} status {status}")
    if status == 1:
        assert "metalab: error: " in err.getvalue(), (argv, err.getvalue())


def pick(places: dict[str, str], names: list[str]) -> st.SearchStrategy[str]:
    """One of the named places (a name twice is drawn twice as often), or now and then any word."""
    return st.sampled_from([places[name] for name in names] + [""]).flatmap(
        lambda path: st.just(path) if path else WORDS)


@fuzz(150)
@given(recipe=st.one_of(st.sampled_from(["omniglot-protonet-5w1s", "omniglot-maml-5w1s", "sinusoid-cnp-5shot",
                                         "omniglot-protonet-5w1", "missing.yaml", "/", "."]), WORDS),
       overrides=OVERRIDES)
# every run, besides the drawn ones: the overrides that escaped as tracebacks before (issue 26)
@example(recipe="omniglot-protonet-5w1s", overrides=["task=[1,2]"])
@example(recipe="omniglot-protonet-5w1s", overrides=["train=1000"])
@example(recipe="omniglot-protonet-5w1s", overrides=["train.steps=???"])
@example(recipe="omniglot-protonet-5w1s", overrides=["train.steps=${nothing}"])
@example(recipe="omniglot-protonet-5w1s", overrides=["name='"])
@example(recipe="~nobody", overrides=[])
def test_show_answers_every_config(recipe, overrides):
    answers_cleanly(["show", recipe, *overrides])


@fuzz(60)
@given(data=st.data(), overrides=OVERRIDES)
def test_eval_answers_every_command_line(places, data, overrides):
    flags = data.draw(st.lists(st.one_of(
        st.tuples(st.sampled_from(["--ways", "--shots", "--queries", "--batch", "--seed"]),
                  st.one_of(st.integers(1, 6).map(str), st.integers(-2, 0).map(str), WORDS)),
        st.tuples(st.just("--manifest"),
                  pick(places, ["list.json", "half.json", "good.json", "missing.json", "empty"])),
        st.tuples(st.just("--checkpoint"), st.sampled_from(["last.pt", "best.pt", "other.pt", places["notes.txt"]])),
        st.tuples(st.just("--split"), pick(places, ["test", "single", "empty", "missing", "notes.txt"])),
        st.tuples(st.sampled_from(["--within-group", "--json"])),
    ), max_size=4))
    run = data.draw(pick(places, ["run", "run", "run", "run", "missing", "empty", "notes.txt"]))
    # --episodes is always given, at most 3: the fuzz stays quick whatever the overrides say
    answers_cleanly(["eval", run, "--episodes", "3", *[word for flag in flags for word in flag], *overrides])


@fuzz(40)
@given(data=st.data())
def test_predict_answers_every_command_line(places, data):
    support = data.draw(pick(places, ["test", "test", "test", "single", "empty", "missing", "notes.txt", "class"]))
    queries = data.draw(st.lists(pick(places, ["image", "image", "class", "class", "test", "empty", "missing",
                                               "notes.txt", "broken.png"]),
                                 min_size=1, max_size=3))
    extra = data.draw(st.lists(st.sampled_from(["--json", "--checkpoint", "last.pt", "-q", "-v"]), max_size=2))
    answers_cleanly(["predict", data.draw(pick(places, ["run", "run", "run", "missing"])), "--support", support,
                     "--query", *queries, *extra])


@fuzz(40)
@given(data=st.data())
def test_the_other_commands_answer_every_command_line(places, data, tmp_path):
    argv = data.draw(st.one_of(
        st.lists(WORDS, max_size=4),  # anything at all
        st.tuples(st.just("plot"), pick(places, ["run", "missing", "empty"]),
                  st.sampled_from(["--out", "--tasks", "--curves"]),
                  st.one_of(st.sampled_from([str(tmp_path / "p.png"), str(tmp_path), "/proc/no.png", "0", "x.unknown"]),
                            WORDS)).map(list),
        st.tuples(st.just("data"), st.just("--data-root"), pick(places, ["missing", "empty", "notes.txt"])).map(list),
        st.tuples(st.just("train"), pick(places, ["run", "missing", "notes.txt", "empty", "good.json"]),
                  st.sampled_from(["--resume", "-q"])).map(list),
    ))
    answers_cleanly(argv)


def test_the_fuzzed_manifest_is_a_real_one(places):
    """The fixture's good manifest scores: the fuzz reaches evaluation, not only the errors before it."""
    manifest = json.loads(Path(places["good.json"]).read_text())
    assert manifest["format"] == "metalab-episodes/1" and len(manifest["episodes"]) == 2
