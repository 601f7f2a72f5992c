"""The layout of the learners' package (issue 25): a family folder lists its algorithms and one learner has one
file (which layers a learner may import: tests/test_layers.py)."""
from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

import pytest

import metalab.algorithms
from metalab.algorithms.registry import learner_class, learner_names

ALGORITHMS = Path(metalab.algorithms.__file__).parent
def learners_by_module() -> dict[str, list[str]]:
    """Registered names by the module that defines them, for the learners of metalab (not those that
    tests register)."""
    modules: dict[str, list[str]] = {}
    for name in learner_names():
        module = learner_class(name).__module__
        if module.startswith("metalab.algorithms."):
            modules.setdefault(module, []).append(name)
    return modules


@pytest.mark.parametrize("family", ["gradient", "metric", "model", "bayesian", "rl"])
def test_a_family_folder_holds_its_base_its_algorithms_and_components_only(family):
    folder = ALGORITHMS / family
    registering = learners_by_module()
    entries = sorted(p.name for p in folder.iterdir() if p.name != "__pycache__")
    for entry in entries:
        if entry in ("__init__.py", "base.py", "components"):
            continue
        assert entry.endswith(".py"), f"{family}/{entry}: a family folder holds modules and components/ only"
        module = f"metalab.algorithms.{family}.{entry.removesuffix('.py')}"
        assert registering.get(module), (
            f"{family}/{entry} registers no learner: move it into {family}/base.py or components/")
    for module in ("base", *(p.stem for p in (folder / "components").glob("*.py"))):
        assert f"metalab.algorithms.{family}.{module}" not in registering, f"{family}/{module} registers a learner"


def test_every_learner_has_its_own_file_or_is_listed_in_its_module_docstring():
    for module_name, names in learners_by_module().items():
        module = sys.modules[module_name]
        for name in names:
            assert Path(module.__file__).stem == name.replace("-", "_") or f"``{name}``" in (module.__doc__ or ""), (
                f"learner {name!r} lives in {module_name}, which is neither named for it nor lists it in its docstring")


@pytest.mark.parametrize("family", ["gradient", "metric", "model", "bayesian", "rl"])
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
        for family in ("gradient", "metric", "model")
        for path in sorted((ALGORITHMS / family).rglob("*.py"))
        if not ast.get_docstring(ast.parse(path.read_text()))
    ]
    assert undocumented == []
