#!/usr/bin/env bash
# Meta-LSTM next to MAML on Omniglot 5-way 1-shot at the same wall-clock budget (RESULTS.md), each with its
# recipe's settings, one thread, niced, one run at a time; scored on 100 test episodes (15 queries a class).
# Usage: benchmarks/learned_optimizers/metalstm_vs_maml.sh RUNS_DIR DATA_ROOT MINUTES
set -euo pipefail
runs=${1:-runs/metalstm-bench}; data=${2:-data}; minutes=${3:-4}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
for recipe in omniglot-metalstm-5w1s omniglot-maml-5w1s; do
  time nice -n 10 python -m metalab train $recipe --data-root "$data" run.dir=$runs/$recipe \
    train.max_minutes=$minutes train.val_every=0 eval.episodes=100 speed.threads=1 train.progress=false \
    run.tensorboard=false
done
