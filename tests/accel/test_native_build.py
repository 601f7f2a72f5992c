"""Building the compiled kernels as users meet them: one build per source version and machine whatever the
checkout, nothing attempted (one line, once) without a compiler, a killed build's leftover lock file removed
instead of waited for, and the learners importable where ``fcntl`` is not (Windows).

Every test runs metalab in a subprocess with its own extension cache (``TORCH_EXTENSIONS_DIR``), never the
user's: the build it makes is the one a fresh machine would make.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from torch.utils import cpp_extension

import metalab
from metalab.accel import native

has_compiler = pytest.mark.skipif(
    sys.platform == "win32" or shutil.which(cpp_extension.get_cxx_compiler()) is None,
    reason=f"no C++ compiler ({cpp_extension.get_cxx_compiler()}) to build the kernels with",
)

#: loads the kernels in a child process: prints where metalab came from, available(), the build directory
LOAD = """
import warnings
from metalab.accel import native
import metalab
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    ok = native.available()
for w in caught:
    print("warning:", w.message)
print(metalab.__file__)
print(ok)
print(native.build_directory())
"""


def checkout(root: Path) -> Path:
    """A copy of metalab's package under ``root``, as a second checkout (or virtual environment) holds it."""
    shutil.copytree(Path(metalab.__file__).parent, root / "metalab", ignore=shutil.ignore_patterns("__pycache__"))
    return root


def run(program: str, cache: Path, source: Path | None = None, env: dict[str, str] | None = None,
        remove: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    environment = dict(os.environ)
    for name in (native.ENV, *remove):
        environment.pop(name, None)
    environment.update({"TORCH_EXTENSIONS_DIR": str(cache), **(env or {})})
    if source is not None:
        environment["PYTHONPATH"] = str(source)
    result = subprocess.run([sys.executable, "-c", program], env=environment, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr
    return result


def loaded(result: subprocess.CompletedProcess) -> tuple[str, bool, Path]:
    *_, module, ok, directory = result.stdout.split("\n")[-4:-1]
    return module, ok == "True", Path(directory)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """An extension cache holding one build, made from a first copy of the sources."""
    root = tmp_path_factory.mktemp("native")
    first = checkout(root / "first")
    cache = root / "cache"
    module, ok, directory = loaded(first_run := run(LOAD, cache, first))
    assert module.startswith(str(first)) and ok, first_run.stdout + first_run.stderr
    assert "compiling its CPU kernels" in first_run.stderr
    assert (directory / native.BUILT).exists()
    return cache


@has_compiler
def test_a_second_checkout_loads_the_first_ones_build_without_compiling(built, tmp_path):
    second = checkout(tmp_path / "second")
    result = run(LOAD, built, second)
    module, ok, directory = loaded(result)
    assert module.startswith(str(second)) and ok
    assert "compiling" not in result.stderr and "waiting" not in result.stderr and "warning" not in result.stdout
    assert [path.name for path in built.iterdir()] == [directory.name]  # one build
    ninja = (directory / "build.ninja").read_text()
    assert str(second) not in ninja and str(built.parent / "first") not in ninja  # built from its own copy
    assert str(directory / "src") in ninja


@has_compiler
def test_a_killed_builds_lock_file_is_removed_instead_of_waited_for(built):
    (directory,) = built.iterdir()
    (directory / native.BUILT).unlink()  # a build killed midway leaves PyTorch's "lock" and no marker
    (directory / "lock").touch()
    module, ok, _ = loaded(result := run(LOAD, built))
    assert ok, result.stderr
    assert not (directory / "lock").exists() and (directory / native.BUILT).exists()
    assert "did not finish" in result.stdout


@pytest.mark.skipif(sys.platform == "win32", reason="the kernels are not built on Windows")
@pytest.mark.parametrize("missing", ["CXX", "PATH"])
def test_without_a_compiler_one_line_once_then_the_pytorch_path(missing, tmp_path):
    """No compiler (CXX naming none, or none on PATH): no build is attempted, so neither PyTorch's compiler
    banner nor ninja's failure; the first process says so in one line, later ones fall back silently."""
    cache = tmp_path / "cache"
    if missing == "CXX":
        env, remove = {"CXX": str(tmp_path / "no-such-compiler")}, ()
    else:
        (tmp_path / "empty").mkdir()
        env, remove = {"PATH": str(tmp_path / "empty")}, ("CXX",)
    program = LOAD + """
import torch
from metalab.accel.folded import ForwardSettings, task_forward
from metalab.nn.backbones import Conv4
module = Conv4(1, 8)
params = {n: p.detach().unsqueeze(0) for n, p in module.named_parameters()}
print(tuple(task_forward(module, params, torch.rand(1, 3, 1, 28, 28), ForwardSettings(channels_last=True)).shape))
"""
    outputs = [run(program, cache, env=env, remove=remove) for _ in range(2)]
    for result in outputs:
        *_, ok, directory, shape = result.stdout.split("\n")[-5:-1]
        assert ok == "False" and shape == "(1, 3, 8)", result.stdout  # the PyTorch path ran
        assert "warning" not in result.stdout
    first, second = (result.stderr.strip().splitlines() for result in outputs)
    assert len(first) == 1 and "no C++ compiler" in first[0], first
    assert "compiling" not in outputs[0].stderr and "ninja" not in outputs[0].stderr
    assert second == []
    assert (Path(directory) / native.NO_COMPILER).exists()


@pytest.mark.skipif(sys.platform == "win32", reason="the kernels are not built on Windows")
def test_a_failed_build_is_not_attempted_again_by_every_process(tmp_path):
    """A compiler that fails (here a script that prints an error and exits 1): the first process tries, warns and
    marks the failure; the next warns with the reason and how to retry, without building; ``rebuild`` retries."""
    compiler = tmp_path / "failing-c++"
    compiler.write_text("#!/bin/sh\necho 'error: simulated compile failure' >&2\nexit 1\n")
    compiler.chmod(0o755)
    cache = tmp_path / "cache"
    first, second = (run(LOAD, cache, env={"CXX": str(compiler)}) for _ in range(2))
    retried = run(LOAD, cache, env={"CXX": str(compiler), native.ENV: native.REBUILD})
    directory = loaded(first)[2]
    assert not loaded(first)[1] and not loaded(second)[1] and not loaded(retried)[1]
    assert "compiling its CPU kernels" in first.stderr and "could not be built" in first.stdout
    assert (directory / native.FAILED).exists()
    assert "compiling" not in second.stderr, second.stderr
    assert "an earlier build failed" in second.stdout and f"{native.ENV}={native.REBUILD}" in second.stdout
    assert "compiling its CPU kernels" in retried.stderr


def test_a_compiler_installed_later_is_looked_for_again(tmp_path, monkeypatch):
    (tmp_path / native.NO_COMPILER).write_text(native.compiler())
    monkeypatch.setattr(native.shutil, "which", lambda name: f"/usr/bin/{name}")
    native._check_compiler(tmp_path)  # no CompilerNotFound: the build goes ahead
    assert not (tmp_path / native.NO_COMPILER).exists()


def test_the_learners_import_and_train_where_fcntl_does_not_exist(tmp_path):
    """Windows has no ``fcntl``: every learner imports, and a gradient learner steps on the PyTorch path."""
    program = """
import sys
sys.modules["fcntl"] = None  # import fcntl now raises ImportError, as on Windows
import torch
from metalab.algorithms.registry import learner_class, learner_names
from metalab.accel import native
from metalab.data.task import Task
from metalab.nn.execution import SpeedOptions
names = learner_names()
MAML = learner_class("maml")
learner = MAML(MAML.Options(name="maml", ways=2, hidden=4), (1, 28, 28), SpeedOptions())
task = Task(torch.rand(1, 2, 1, 28, 28), torch.tensor([[0, 1]]), torch.rand(1, 2, 1, 28, 28), torch.tensor([[0, 1]]))
learner.meta_step(task)
print(len(names), "maml" in names and "protonet" in names and "cnp" in names, native.available())
"""
    result = run(program, tmp_path / "cache")
    count, every_family, ok = result.stdout.split()
    assert int(count) >= 20 and every_family == "True" and ok == "False"
    assert "RuntimeWarning" not in result.stderr
