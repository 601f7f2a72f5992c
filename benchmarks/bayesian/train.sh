#!/usr/bin/env bash
# One short run at a wall-clock budget: bash benchmarks/bayesian/train.sh MINUTES NAME RECIPE [key=value ...]
# The run goes to ${RUNS:-/tmp/metalab-bayesian-runs}/NAME (scored afterwards with `metalab eval RUN --json`).
set -euo pipefail
minutes=$1 name=$2 recipe=$3; shift 3
runs=${RUNS:-/tmp/metalab-bayesian-runs}
python=${PYTHON:-python}
export METALAB_DATA=${METALAB_DATA:-/work/shared/data} OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p "$runs"
/usr/bin/time -f "$name: %e s wall, %U s user" nice -n 10 "$python" -m metalab -q train "$recipe" \
  run.dir="$runs/$name" train.max_minutes="$minutes" train.steps=100000 speed.threads=1 train.progress=false \
  run.tensorboard=false train.val_every=0 train.ckpt_every=25 train.log_every=25 eval.episodes=1 "$@" \
  > "$runs/$name.train.log" 2>&1 || echo "$name failed (see $runs/$name.train.log)"
tail -n 1 "$runs/$name.train.log"
