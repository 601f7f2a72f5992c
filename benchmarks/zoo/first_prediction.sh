#!/usr/bin/env bash
# Time to first prediction for a new user (a benchmark, not a test): from `pip install` of metalab's wheel in a fresh
# virtual environment to `metalab predict --model MODEL` printing predictions for a 5-way 5-shot folder of Omniglot
# test characters. Prints each phase's wall seconds and the machine's load; the pip cache is whatever this machine has
# (PIP_NO_CACHE_DIR=1 to measure a cold one).
# Usage (from the project root): bash benchmarks/zoo/first_prediction.sh [MODEL]   (WORK=/tmp/metalab-first to keep it;
# BUILD_PYTHON=... for the Python that builds the wheel, default .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/env.sh
model=${1:-omniglot-protonet-5w1s}
work=${WORK:-$(mktemp -d /tmp/metalab-first.XXXXXX)}
python=${PYTHON:-python3}                      # the user's Python (3.11: torch 2.13.0's wheel on this machine)
build_python=${BUILD_PYTHON:-.venv/bin/python}  # the developer's, with setuptools>=77 (scripts/setup.sh)
mkdir -p "$work"
now() { date +%s.%N; }
phase() { printf '%-44s %7.1f s\n' "$1" "$(echo "$3 - $2" | bc)"; }
echo "load before: $(uptime)"
start=$(now)
"$build_python" -m pip wheel . --no-deps --no-build-isolation --quiet -w "$work/dist" >/dev/null
built=$(now)
"$python" benchmarks/zoo/omniglot_folder.py "${METALAB_DATA:?set METALAB_DATA to the data root}" "$work/folder" >/dev/null
folder=$(now)
# what the user does, from here on
"$python" -m venv "$work/venv"
venv=$(now)
"$work/venv/bin/pip" install --quiet torch==2.13.0
torch=$(now)
"$work/venv/bin/pip" install --quiet "$work"/dist/metalab-*.whl
installed=$(now)
"$work/venv/bin/metalab" predict --model "$model" --support "$work/folder/support" --query "$work/folder/queries" \
  | tee "$work/predictions.tsv"
predicted=$(now)
echo "load after: $(uptime)"
phase "(developer) build the wheel" "$start" "$built"
phase "(not timed for the user) write the folder" "$built" "$folder"
phase "python -m venv" "$folder" "$venv"
phase "pip install torch==2.13.0" "$venv" "$torch"
phase "pip install metalab wheel (and its deps)" "$torch" "$installed"
phase "metalab predict --model $model" "$installed" "$predicted"
phase "user total: venv + installs + first prediction" "$folder" "$predicted"
correct=$(awk -F'\t' '{n = split($1, p, "/"); if (p[n-1] == $2) c++} END {print c "/" NR}' "$work/predictions.tsv")
echo "queries predicted as the class folder they sit in: $correct"
echo "wheel size: $(du -h "$work"/dist/metalab-*.whl | cut -f1); venv size: $(du -sh "$work/venv" | cut -f1)"
