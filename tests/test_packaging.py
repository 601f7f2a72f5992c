"""What a user installs: the dependency lists match the code's imports, and the wheel carries the license,
the typing marker, the model zoo (manifest and weights) and the metadata (SPDX license expression,
classifiers, torch floor)."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def check_dependencies():
    spec = importlib.util.spec_from_file_location("check_dependencies", ROOT / "scripts" / "check_dependencies.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_dependency_lists_are_what_the_code_imports():
    assert check_dependencies().problems() == []


def test_the_check_names_an_unused_and_a_missing_dependency(tmp_path):
    (tmp_path / "src").symlink_to(ROOT / "src")
    (tmp_path / "tests").symlink_to(ROOT / "tests")
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '    "tqdm",\n' in pyproject
    (tmp_path / "pyproject.toml").write_text(pyproject.replace('    "tqdm",\n', '    "hypothesis",\n'))
    found = check_dependencies().problems(tmp_path)
    assert any(p.startswith("src/metalab imports tqdm") for p in found), found
    assert any(p.startswith("hypothesis is a runtime dependency") for p in found), found


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    """The wheel built from a copy of the project (the build writes into the tree it builds)."""
    tree = tmp_path_factory.mktemp("project")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, tree / name)
    shutil.copytree(ROOT / "src", tree / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(tree / "dist"), str(tree)], check=True, capture_output=True, timeout=600)
    (built,) = (tree / "dist").glob("metalab-*.whl")
    return zipfile.ZipFile(built)


def test_the_wheel_carries_the_license_the_typing_marker_the_kernels_sources_and_the_split_lists(wheel):
    names = wheel.namelist()
    splits = {"omniglot/vinyals/train.txt", "miniimagenet/ravi/test.csv", "tieredimagenet/ren/val.csv",
              "cub/test.txt", "cifar100/cifar-fs/train.txt", "cifar100/fc100/val.txt"}
    assert {f"metalab/splits/{path}" for path in splits} <= set(names)
    assert "metalab/py.typed" in names
    manifest = json.loads(wheel.read("metalab/zoo/weights/manifest.json"))  # the model zoo: manifest and weights
    for record in manifest["models"].values():
        assert hashlib.sha256(wheel.read(f"metalab/zoo/weights/{record['file']}")).hexdigest() == record["sha256"]
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)
    assert {"metalab/accel/native/vec.h", "metalab/accel/native/patch_conv_pool.cpp"} <= set(names)
    assert "MIT License" in (ROOT / "LICENSE").read_text()


def test_the_wheel_metadata(wheel):
    (metadata,) = [name for name in wheel.namelist() if name.endswith(".dist-info/METADATA")]
    lines = wheel.read(metadata).decode().splitlines()
    assert "License-Expression: MIT" in lines
    assert "Classifier: Typing :: Typed" in lines
    assert not [line for line in lines if line.startswith("Classifier: License ::")]  # the expression says it
    requires = [line.removeprefix("Requires-Dist: ") for line in lines if line.startswith("Requires-Dist: ")]
    assert "torch>=2.5" in requires
    assert [r for r in requires if r.startswith("scipy")] == ["scipy"]  # metalab.automl uses it
    assert 'hypothesis; extra == "test"' in requires
