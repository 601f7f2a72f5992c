#!/usr/bin/env bash
# Short Omniglot 5-way 1-shot runs at one wall-clock budget: bash benchmarks/bayesian/train.sh MINUTES RECIPE...
# Runs go to ${RUNS:-/tmp/metalab-bayesian-runs}/<recipe>; each is scored afterwards by score.sh.
set -euo pipefail
minutes=$1; shift
runs=${RUNS:-/tmp/metalab-bayesian-runs}
python=${PYTHON:-python}
export METALAB_DATA=${METALAB_DATA:-/work/shared/data} OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
for recipe in "$@"; do
  /usr/bin/time -f "$recipe: %e s wall, %U s user" nice -n 10 "$python" -m metalab -q train "$recipe" \
    run.dir="$runs/$recipe" train.max_minutes="$minutes" train.steps=100000 speed.threads=1 train.progress=false \
    run.tensorboard=false train.val_every=0 train.ckpt_every=25 train.log_every=25 eval.episodes=1 \
    > "$runs/$recipe.train.log" 2>&1 || echo "$recipe failed (see $runs/$recipe.train.log)"
  tail -1 "$runs/$recipe.train.log"
done
