#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv: torch (CPU wheel where one is
# provided locally), metalab in editable mode, the test tools, the documentation tools (mkdocs) and the vision
# extra (timm, torchvision). Quick when nothing changed.
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
  # the vision extra (timm, torchvision) with torchvision pinned to the release built for torch 2.13 (it requires
  # torch==2.13.0, which the CPU wheel above satisfies, so pip keeps that torch and pulls no CUDA packages); an
  # unpinned torchvision would be the newest, which requires a newer torch and would replace the CPU wheel by a
  # multi-GB CUDA build. Its compiled ops are a CUDA build that does not load beside the CPU torch:
  # metalab/utils/torchvision_compat.py imports the pure-Python rest (models, transforms).
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test,docs,vision]" "torch==2.13.0" \
    "torchvision==0.28.0" 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -c "import metalab, torch; from metalab.utils.torchvision_compat import import_timm; import_timm()" 
  echo "$wanted" > "$stamp"
fi
