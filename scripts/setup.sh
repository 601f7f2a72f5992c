#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv: torch (CPU wheel where one is
# provided locally), metalab in editable mode, the test tools and the documentation tools (mkdocs). Quick when
# nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.metalab-installed
wanted=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
  # torch first, pinned to the release these machines carry as a local CPU wheel; pyproject
  # itself asks only torch>=2.5, which this satisfies without pulling CUDA packages.
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "torch==2.13.0" 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test,docs]" 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -c "import metalab, torch" 
  echo "$wanted" > "$stamp"
fi
