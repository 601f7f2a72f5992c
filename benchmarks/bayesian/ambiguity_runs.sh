#!/usr/bin/env bash
# The ambiguity experiment (not a test): PLATIPUS then BMAML meta-trained on the ambiguous sinusoid/line tasks for
# a wall-clock budget each (train.sh: one at a time, niced, one thread), each scored on 100 fixed ambiguous test
# tasks by `metalab eval --json` (MSE, NLL, 50% / 95% coverage), then ambiguity.py draws the figure and counts the
# tasks whose samples cover both explanations.
# Usage: PLATIPUS_MINUTES=20 BMAML_MINUTES=10 bash benchmarks/bayesian/ambiguity_runs.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
runs=${RUNS:-/tmp/metalab-bayesian-runs}
python=${PYTHON:-python}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
bash "$here/train.sh" "${PLATIPUS_MINUTES:-20}" ambiguous-platipus ambiguous-platipus-5shot
bash "$here/train.sh" "${BMAML_MINUTES:-10}" ambiguous-bmaml ambiguous-bmaml-5shot
for name in ambiguous-platipus ambiguous-bmaml; do
  /usr/bin/time -f "$name eval: %e s wall, %U s user" nice -n 10 "$python" -m metalab -q eval "$runs/$name" \
    --episodes 100 --threads 1 --json > "$here/results/$name.eval.json"
done
/usr/bin/time -f "figure: %e s wall, %U s user" nice -n 10 "$python" "$here/ambiguity.py" "$runs/ambiguous-platipus" \
  "$runs/ambiguous-bmaml" --tasks 100 --out "$here/ambiguity.png" | tee "$here/results/ambiguity.jsonl"
