"""Imports go one way (docs/architecture.md): cli -> train -> algorithms -> nn -> accel, and data is read by all
of them but knows none of them; optimizers (learned optimizers) sits beside algorithms, on nn and data.
Checked on the source, every import statement included (lazy ones too)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import metalab

PACKAGE = Path(metalab.__file__).parent
#: layer -> the layers it must never import
FORBIDDEN = {
    "data": {"cli", "train", "algorithms", "optimizers", "nn", "accel", "config", "nas"},
    # the environments of meta-RL are its data: they know no learner either
    "envs": {"cli", "train", "algorithms", "optimizers", "nn", "accel", "config", "nas"},
    "accel": {"cli", "train", "algorithms", "optimizers", "nn", "config", "nas"},
    "nn": {"cli", "train", "algorithms", "optimizers", "config", "nas"},
    # nas (the search space, DARTS, its searches) reads nn and data; algorithms (MetaNAS) and train may read it;
    # nas/cli.py is the `metalab nas` verbs, registered by cli.py, and imports nothing above nas either
    "nas": {"cli", "train", "algorithms", "optimizers", "accel", "config"},
    "algorithms": {"cli", "train", "accel", "config"},
    "optimizers": {"cli", "train", "accel", "config", "nas"},
    "train": {"cli", "zoo"},
    # the model zoo loads trained learners through train; zoo/cli.py is the `metalab zoo` verbs
    "zoo": {"cli"},
}


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "metalab" else None


def imported_modules(path: Path) -> set[str]:
    """Absolute names of every module (and imported name) of the file at ``path``, at any depth: function-level
    imports too, relative ones resolved."""
    package = ".".join(("metalab", *path.relative_to(PACKAGE).parts[:-1]))
    return modules_imported_by(path.read_text(), package)


def modules_imported_by(source: str, package: str) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{module}" if module else base
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def test_the_import_check_sees_function_level_and_relative_imports():
    source = ("import torch\ndef f():\n    from metalab.train.plots import plot_run\n"
              "from ....cli import main\nfrom . import base\n")
    modules = modules_imported_by(source, "metalab.algorithms.model.components")
    assert {layer_of(m) for m in modules} == {None, "train", "cli", "algorithms"}
    assert "metalab.algorithms.model.components.base" in modules


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_no_layer_imports_one_above_it(layer):
    offences = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        for module in imported_modules(path):
            target = layer_of(module)
            if target and target.removesuffix(".py") in FORBIDDEN[layer]:
                offences.append(f"{path.relative_to(PACKAGE)} imports {module}")
    assert not offences, "\n".join(offences)


def test_the_speed_backend_is_reached_only_through_the_dispatch_point():
    """Outside accel/, only nn/execution.py (and the trainer and CLI, for process-wide settings) import it."""
    allowed = {"nn/execution.py", "config.py", "train/trainer.py", "cli.py"}
    offences = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith("accel/") or relative in allowed:
            continue
        offences += [f"{relative} imports {m}" for m in imported_modules(path) if layer_of(m) == "accel"]
    assert not offences, "\n".join(offences)
