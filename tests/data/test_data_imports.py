"""The data package's imports go one way: the store (data root, downloads, cache) knows no data set,
each data set's module builds on the store, and ``datasets.py`` alone knows every data set."""
from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import metalab.data
from metalab.data import datasets

PACKAGE = "metalab.data"
FOLDER = Path(metalab.data.__file__).parent
MODULES = {f"{PACKAGE}.{info.name}" for info in pkgutil.iter_modules([str(FOLDER)])}


def data_modules_imported(path: Path) -> set[str]:
    """The modules of metalab.data that a file imports, at any depth (lazy imports in functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = f"{PACKAGE}.{base}" if base else PACKAGE
            # `from metalab.data import omniglot` imports the module metalab.data.omniglot
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        found |= {name for name in names if name == PACKAGE or name.startswith(PACKAGE + ".")}
    return found


def module_path(module: str) -> Path:
    return FOLDER / "__init__.py" if module == PACKAGE else FOLDER / f"{module.rsplit('.', 1)[1]}.py"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_data_module_imports(module):
    assert importlib.import_module(module).__doc__, f"{module} has no module docstring"


def test_the_store_imports_no_data_set_module():
    assert data_modules_imported(FOLDER / "store.py") == set()


def test_the_data_modules_import_each_other_without_a_cycle():
    graph = {module: data_modules_imported(module_path(module)) - {module} for module in MODULES | {PACKAGE}}
    visiting: list[str] = []
    done: set[str] = set()

    def visit(module: str) -> None:
        if module in done:
            return
        assert module not in visiting, f"import cycle: {' -> '.join(visiting[visiting.index(module):] + [module])}"
        visiting.append(module)
        for imported in sorted(graph.get(module, ())):
            visit(imported)
        visiting.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)


def test_the_cycle_check_sees_lazy_and_package_imports(tmp_path):
    source = tmp_path / "fake.py"
    source.write_text("from metalab.data import omniglot, task\n"
                      "def f():\n    from metalab.data.store import cache_dir\n"
                      "from . import folders\nimport torch\n")
    assert data_modules_imported(source) == {"metalab.data.omniglot", "metalab.data.task", "metalab.data.store",
                                             "metalab.data.folders"}


def test_a_data_set_joins_the_report_through_datasets_alone(tmp_path, monkeypatch):
    """What ``metalab data`` prints is assembled from each data set's ``data_report(root)``."""
    monkeypatch.setitem(datasets.REPORTS, "toy", lambda root: ["Toy", f"  images under {root / 'toy'}"])
    report = datasets.describe_data(tmp_path).splitlines()
    assert report[-3:] == ["", "Toy", f"  images under {tmp_path / 'toy'}"]
    assert report[0].startswith(f"data root: {tmp_path}") and "Omniglot" in report and "mini-ImageNet" in report
