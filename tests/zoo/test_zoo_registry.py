"""The model zoo: an entry built from a run (manifest checksums, versions), the packaged manifest checked against its
files, a corrupted weights file refused, weights downloaded (checksummed, cached) or an offline error, `zoo list`."""
from __future__ import annotations

import functools
import hashlib
import json
import shutil
import socket
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from importlib.resources import files
from pathlib import Path

import pytest

from metalab.cli import main
from metalab.data.store import ChecksumError, DataNotFoundError
from metalab.utils.checksum import IntegrityError
from metalab.zoo import Zoo
from metalab.zoo.build import build_entry
from testdata import make_class_dataset, write_image_folder


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def untrained_run(run_dir: Path, test_split: str) -> Path:
    """A run directory whose best.pt holds an untrained 8-channel ProtoNet for 28x28 grey-scale images (what the
    zoo keeps of a checkpoint does not depend on training)."""
    from omegaconf import OmegaConf

    from metalab.config import compose
    from metalab.train.build import build_learner
    from metalab.train.checkpoint import save_checkpoint

    config = compose({"name": "tiny-protonet", "learner": {"name": "protonet", "hidden": 8},
                      "data": {"dataset": "folder", "train_split": "train", "test_split": test_split}})
    learner = build_learner(config, (1, 28, 28))
    save_checkpoint(run_dir / "best.pt", {"model": learner.state_dict(), "config": OmegaConf.to_container(config),
                                          "input_shape": [1, 28, 28], "step": 4, "optimizer": {"state": list(
                                              range(10000))}})
    return run_dir


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """Generated class folders, and a run made into the model "tiny" of a zoo folder."""
    root = tmp_path_factory.mktemp("zoo")
    test = write_image_folder(root / "test", make_class_dataset(classes=5, items=2))
    run = untrained_run(root / "run", str(test))
    evaluation = {"metric": "accuracy", "mean": 0.5, "ci95": 0.1, "episodes": 5, "ways": 5, "shots": 1,
                  "queries": 3, "seed": 0, "split": str(test), "step": 4}
    build_entry(run, "tiny", root / "zoo", evaluation, {"data": "generated classes"})
    return {"test": test, "run": run, "zoo": root / "zoo"}


def test_an_entry_records_its_weights_checksum_size_and_versions(built, tmp_path):
    manifest = json.loads((built["zoo"] / "manifest.json").read_text())
    record = manifest["models"]["tiny"]
    weights = built["zoo"] / "tiny.pt"
    assert record["sha256"] == sha256(weights) and record["size"] == weights.stat().st_size
    assert record["url"] is None and record["learner"] == "protonet" and record["input_shape"] == [1, 28, 28]
    assert record["accuracy"]["episodes"] == 5 and record["metalab_version"] == "0.1.0"
    assert manifest["format"] == 1 and manifest["zoo_version"] == 1
    # the weights without the optimiser's state (here a large stand-in): smaller than the checkpoint they come from
    assert weights.stat().st_size < (built["run"] / "best.pt").stat().st_size
    copy = shutil.copytree(built["zoo"], tmp_path / "zoo")
    build_entry(built["run"], "tiny-again", copy, {"mean": 0.5, "ci95": 0.1, "step": 4})
    again = json.loads((copy / "manifest.json").read_text())
    assert again["zoo_version"] == 2 and set(again["models"]) == {"tiny", "tiny-again"}
    with pytest.raises(ValueError, match="scored step 3 of .* holds step 4"):
        build_entry(built["run"], "other", copy, {"mean": 0.5, "ci95": 0.1, "step": 3})


def test_the_packaged_manifest_matches_its_weights():
    folder = Path(str(files("metalab") / "zoo" / "weights"))
    zoo = Zoo(folder)
    assert {e.record["learner"] for e in zoo.entries.values()} >= {"protonet", "maml"} and len(zoo.entries) >= 3
    total = 0
    for entry in zoo.entries.values():
        assert entry.url is None and sha256(folder / entry.file) == entry.sha256, entry.name
        assert (folder / entry.file).stat().st_size == entry.record["size"]
        assert entry.record["accuracy"]["episodes"] == 1000 and entry.record["metalab_version"]
        total += entry.record["size"]
    assert total < 5e6  # package data: a few MB at most


def test_a_corrupted_weights_file_is_refused_naming_it(built, tmp_path, capsys, monkeypatch):
    zoo = shutil.copytree(built["zoo"], tmp_path / "zoo")
    data = bytearray((zoo / "tiny.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (zoo / "tiny.pt").write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"weights file .*tiny\.pt of zoo model tiny is corrupt.*reinstall"):
        Zoo(zoo).load("tiny")
    monkeypatch.setenv("METALAB_ZOO", str(zoo))
    status = main(["predict", "--model", "tiny", "--support", str(built["test"]), "--query", str(built["test"])])
    assert status == 1 and f"{zoo / 'tiny.pt'} of zoo model tiny is corrupt" in capsys.readouterr().err


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch) -> None:
    """Downloaded weights go to this test's own cache."""
    monkeypatch.setenv("METALAB_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def served(tmp_path) -> Iterator[tuple[str, Path]]:
    """(base URL, folder) of an HTTP server on 127.0.0.1 serving the folder."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None  # type: ignore[method-assign]
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", folder
    httpd.shutdown()
    httpd.server_close()


def zoo_with_url(built: dict[str, Path], folder: Path, url: str, sha: str | None = None) -> Zoo:
    """A copy of the built zoo whose model "tiny" is downloaded from ``url`` instead of packaged."""
    shutil.copytree(built["zoo"], folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["models"]["tiny"].update(url=url, **({"sha256": sha} if sha else {}))
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / "tiny.pt").unlink()
    return Zoo(folder)


def test_larger_weights_are_downloaded_checked_and_cached(built, served, tmp_path):
    base, folder = served
    shutil.copy(built["zoo"] / "tiny.pt", folder / "tiny.pt")
    zoo = zoo_with_url(built, tmp_path / "zoo", f"{base}/tiny.pt")
    learner, config, entry = zoo.load("tiny")
    cached = zoo.local_path(entry)
    assert sha256(cached) == entry.sha256 and learner.input_shape == (1, 28, 28)
    (folder / "tiny.pt").unlink()  # the second use reads the cache, not the server
    assert zoo.load("tiny")[2] is entry
    cached.write_bytes(cached.read_bytes()[:-10])
    with pytest.raises(IntegrityError, match=f"{cached}.*delete it and run the command again to download it again"):
        zoo.load("tiny")


def test_a_download_with_another_checksum_leaves_nothing(built, served, tmp_path):
    base, folder = served
    shutil.copy(built["zoo"] / "tiny.pt", folder / "tiny.pt")
    zoo = zoo_with_url(built, tmp_path / "zoo", f"{base}/tiny.pt", sha="0" * 64)
    with pytest.raises(ChecksumError, match="expected SHA256 0000"):
        zoo.load("tiny")
    assert not zoo.local_path(zoo.entry("tiny")).exists()


def test_offline_the_download_says_where_to_put_the_file(built, tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    zoo = zoo_with_url(built, tmp_path / "zoo", f"http://127.0.0.1:{port}/tiny.pt")
    where = zoo.local_path(zoo.entry("tiny"))
    with pytest.raises(DataNotFoundError, match=f"could not download .*place it at {where}"):
        zoo.load("tiny")


def test_zoo_list_and_show(built, capsys, monkeypatch):
    monkeypatch.setenv("METALAB_ZOO", str(built["zoo"]))
    assert main(["zoo", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"metalab model zoo, version 1 ({built['zoo']})"
    assert lines[1].split() == ["name", "data", "recipe", "test", "accuracy", "+-", "95%", "CI", "size", "sha256",
                                "weights"]
    size = (built["zoo"] / "tiny.pt").stat().st_size
    assert lines[2].split() == ["tiny", "generated", "classes", "tiny-protonet", "50.00", "+-", "10.00", "%", "(5w1s,",
                                "5", "episodes)", f"{size / 1e3:.0f}", "KB", sha256(built["zoo"] / "tiny.pt")[:12],
                                "packaged"]
    assert main(["zoo", "show", "tiny"]) == 0
    shown = capsys.readouterr().out
    assert f"sha256: {sha256(built['zoo'] / 'tiny.pt')}" in shown and "metalab predict --model tiny" in shown
    assert main(["zoo", "show", "nope"]) == 1
    assert "the zoo has no model 'nope'; `metalab zoo list` shows its models: tiny" in capsys.readouterr().err


def test_the_command_line_parser_does_not_import_torch_for_the_zoo():
    """`metalab zoo` is registered on the parser of every command; the registry (and torch) load only when used."""
    import subprocess
    import sys

    code = "import sys, metalab.cli; metalab.cli.parser(); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"
