#!/usr/bin/env bash
# Score runs on the same fixed test episodes: bash benchmarks/bayesian/score.sh EPISODES NAME...
# Writes ${RUNS:-/tmp/metalab-bayesian-runs}/NAME.eval.json (metalab eval --json) and prints each line.
set -euo pipefail
episodes=$1; shift
runs=${RUNS:-/tmp/metalab-bayesian-runs}
python=${PYTHON:-python}
export METALAB_DATA=${METALAB_DATA:-/work/shared/data} OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
for name in "$@"; do
  /usr/bin/time -f "$name eval: %e s wall, %U s user" nice -n 10 "$python" -m metalab -q eval "$runs/$name" \
    --episodes "$episodes" --threads 1 --json > "$runs/$name.eval.json"
  cat "$runs/$name.eval.json" | "$python" -c "import json, sys; r = json.load(sys.stdin); print('$name', r['step'],
    *(f\"{k} {r[k]:.4f} +- {r[k + '_ci95' if k != 'accuracy' else 'ci95']:.4f}\" for k in ('accuracy', 'nll', 'ece', 'brier')),
    f\"ece_pooled {r['ece_pooled']:.4f}\")"
done
