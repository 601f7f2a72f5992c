#!/usr/bin/env bash
# The learned-optimizer benchmark of RESULTS.md: meta-train the LSTM optimizer on quadratics and on the
# digits MLP, score each against tuned SGD/Adam/RMSprop/Nesterov on held-out problems at 1x and 2x the
# training horizon (and the digits optimizer on a wider MLP and on ReLU), and plot. One job at a time, niced.
# Usage: benchmarks/learned_optimizers/l2o.sh RUNS_DIR
set -euo pipefail
runs=${1:-runs/l2o-bench}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
metalab="nice -n 10 python -m metalab"
time $metalab train l2o-lstm-quadratic run.dir=$runs/quadratic steps=500
time $metalab eval $runs/quadratic --episodes 64
time $metalab train l2o-lstm-digits run.dir=$runs/digits steps=150 problems_per_step=4
time $metalab eval $runs/digits --episodes 50
time $metalab eval $runs/digits --episodes 50 problem.mlp_hidden=40
time $metalab eval $runs/digits --episodes 50 problem.activation=relu
$metalab plot $runs/quadratic
$metalab plot $runs/digits
