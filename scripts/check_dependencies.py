"""Check pyproject.toml's dependency lists against the imports of the code (run with the project's venv).

The runtime dependencies must be exactly the distributions that ``src/metalab`` imports, besides those of the
optional feature extras (every extra but ``test`` and ``docs``, e.g. ``vision``), which it may import too; the test
extra must cover what ``tests/`` imports beyond them. Exit status 1, naming each difference, when they disagree.

    .venv/bin/python scripts/check_dependencies.py
"""
from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[1]
#: modules that need a distribution other than their own: module -> distribution
THROUGH = {"torch.utils.tensorboard": "tensorboard"}


def requirement_name(requirement: str) -> str:
    """The normalised distribution name of a requirement string ("omegaconf>=2.3" -> "omegaconf")."""
    return normalise(re.split(r"[\s\[<>=!~;@]", requirement.strip(), maxsplit=1)[0])


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_modules(folder: Path) -> set[str]:
    """Absolute imports of the ``.py`` files under ``folder``: top-level names, plus the full names of
    :data:`THROUGH`'s modules."""
    found: set[str] = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.add(name.split(".")[0])
                found.update(module for module in THROUGH if name == module or name.startswith(module + "."))
    return found


def local_modules(folder: Path) -> set[str]:
    """The project's own modules as code under ``folder`` may import them: metalab, the folder itself and its
    files (tests import their helpers, e.g. ``testdata``, by file name)."""
    return {"metalab", folder.name, *(path.stem for path in folder.rglob("*.py"))}


def distributions(modules: set[str], local: set[str]) -> tuple[set[str], set[str]]:
    """(distributions providing the third-party modules, modules no installed distribution provides)."""
    providers = importlib.metadata.packages_distributions()
    needed, unknown = set(), set()
    for module in modules:
        if module in THROUGH:
            needed.add(normalise(THROUGH[module]))
        elif module in sys.stdlib_module_names or module in local or module == "__future__":
            continue
        elif module in providers:
            needed.update(normalise(name) for name in providers[module])
        else:
            unknown.add(module)
    return needed, unknown


def problems(root: Path = ROOT) -> list[str]:
    """Each disagreement between ``root``'s pyproject.toml and the imports of its code, as a sentence."""
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    runtime = {requirement_name(r) for r in project["dependencies"]}
    extras = project["optional-dependencies"]
    test = {requirement_name(r) for r in extras["test"]}
    optional = {requirement_name(r) for name, listed in extras.items() if name not in ("test", "docs") for r in listed}
    found: list[str] = []
    source, tests = root / "src" / "metalab", root / "tests"
    used, unknown = distributions(imported_modules(source), local_modules(source))
    found += [f"src/metalab imports {m}, which no installed distribution provides" for m in sorted(unknown)]
    found += [f"src/metalab imports {d}: add it to [project] dependencies (or to a feature extra)"
              for d in sorted(used - runtime - optional)]
    found += [f"{d} is a runtime dependency that src/metalab never imports: remove it, or move it to an extra"
              for d in sorted(runtime - used)]
    used_by_tests, unknown = distributions(imported_modules(tests), local_modules(tests))
    found += [f"tests import {m}, which no installed distribution provides" for m in sorted(unknown)]
    missing = used_by_tests - runtime - test - optional - {"pytest"}
    found += [f"tests import {d}: add it to the test extra" for d in sorted(missing)]
    return found


def main() -> int:
    found = problems()
    for problem in found:
        print(problem)
    if not found:
        print("dependencies: pyproject.toml lists what the code imports")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
