"""The linters, as tests: ruff over the repository and mypy over the package, each with its configuration in
pyproject.toml, so that the test suite (and CI) fails where either finds something."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_tool(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m module args`` in the repository root; skipped where the tool is not installed."""
    pytest.importorskip(module, reason=f"{module} is not installed; scripts/setup.sh installs it with the test extra "
                                       f"(pip install -e '.[test]')")
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


def test_ruff_finds_nothing() -> None:
    result = run_tool("ruff", "check", "--no-fix", ".")
    assert result.returncode == 0, f"ruff check found problems:\n{result.stdout}{result.stderr}"


def test_mypy_finds_nothing() -> None:
    # the files (src/metalab) and settings are pyproject's; the cache is .mypy_cache/ (git-ignored), which makes
    # a second run take seconds
    result = run_tool("mypy", "--config-file", "pyproject.toml")
    assert result.returncode == 0, f"mypy found type errors:\n{result.stdout}{result.stderr}"
