"""The layout of the learners' package (issue 25): a family folder lists its algorithms, one learner
has one file, and no learner imports the trainer or the command line."""
from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

import pytest

import metalab.algorithms
from metalab.algorithms.registry import learner_class, learner_names

ALGORITHMS = Path(metalab.algorithms.__file__).parent
#: what the learners' package may not import: data flows data -> learner -> trainer -> reports
FORBIDDEN = ("metalab.train", "metalab.cli")


def imported_modules(source: str, package: str) -> list[str]:
    """Absolute names of every module (and imported name) in ``source``, a module of ``package``, at
    any depth: function-level imports too, relative ones resolved."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{module}" if module else base
            found += [module, *(f"{module}.{alias.name}" for alias in node.names)]
    return found


def forbidden(module: str) -> bool:
    return any(module == name or module.startswith(name + ".") for name in FORBIDDEN)


def test_no_module_of_the_learners_package_imports_the_trainer_or_the_cli():
    offending = []
    for path in sorted(ALGORITHMS.rglob("*.py")):
        package = ".".join(path.relative_to(ALGORITHMS.parent.parent).parts[:-1])
        offending += [f"{path.relative_to(ALGORITHMS.parent)} imports {module}"
                      for module in imported_modules(path.read_text(), package) if forbidden(module)]
    assert offending == []


def test_the_import_check_sees_function_level_and_relative_imports():
    source = "import torch\ndef f():\n    from metalab.train.plots import plot_run\nfrom ....cli import main\nfrom . import base\n"
    modules = imported_modules(source, "metalab.algorithms.model.components")
    assert sorted(filter(forbidden, modules)) == ["metalab.cli", "metalab.cli.main", "metalab.train.plots",
                                                  "metalab.train.plots.plot_run"]
    assert "metalab.algorithms.model.components.base" in modules and not forbidden("metalab.training_data")


def learners_by_module() -> dict[str, list[str]]:
    """Registered names by the module that defines them, for the learners of metalab (not those that
    tests register)."""
    modules: dict[str, list[str]] = {}
    for name in learner_names():
        module = learner_class(name).__module__
        if module.startswith("metalab.algorithms."):
            modules.setdefault(module, []).append(name)
    return modules


@pytest.mark.parametrize("family", ["metric", "model"])
def test_a_family_folder_holds_its_base_its_algorithms_and_components_only(family):
    folder = ALGORITHMS / family
    registering = learners_by_module()
    entries = sorted(p.name for p in folder.iterdir() if p.name != "__pycache__")
    for entry in entries:
        if entry in ("__init__.py", "base.py", "components"):
            continue
        assert entry.endswith(".py"), f"{family}/{entry}: a family folder holds modules and components/ only"
        module = f"metalab.algorithms.{family}.{entry.removesuffix('.py')}"
        assert registering.get(module), f"{family}/{entry} registers no learner: move it into {family}/base.py or components/"
    for module in ("base", *(p.stem for p in (folder / "components").glob("*.py"))):
        assert f"metalab.algorithms.{family}.{module}" not in registering, f"{family}/{module} registers a learner"


def test_every_learner_has_its_own_file_or_is_listed_in_its_module_docstring():
    for module_name, names in learners_by_module().items():
        module = sys.modules[module_name]
        for name in names:
            assert Path(module.__file__).stem == name.replace("-", "_") or f"``{name}``" in (module.__doc__ or ""), (
                f"learner {name!r} lives in {module_name}, which is neither named for it nor lists it in its docstring")


@pytest.mark.parametrize("family", ["metric", "model"])
def test_the_family_docstring_lists_its_algorithms(family):
    package = importlib.import_module(f"metalab.algorithms.{family}")
    for module, names in learners_by_module().items():
        if module.startswith(package.__name__ + "."):
            for name in names:
                assert f"(``{name}``)" in package.__doc__, f"metalab.algorithms.{family} does not list {name!r}"
                assert f"``{module.rsplit('.', 1)[1]}.py``" in package.__doc__


def test_every_module_of_the_families_says_what_it_is_for():
    undocumented = [
        str(path.relative_to(ALGORITHMS))
        for family in ("metric", "model")
        for path in sorted((ALGORITHMS / family).rglob("*.py"))
        if not ast.get_docstring(ast.parse(path.read_text()))
    ]
    assert undocumented == []
