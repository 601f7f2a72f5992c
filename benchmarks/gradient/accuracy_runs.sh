#!/usr/bin/env bash
# Omniglot accuracy runs of the gradient-based learners within a stated wall budget (not a test).
# Each recipe trains on one thread pinned to one core for MINUTES of wall time (train.max_minutes;
# train.steps stays the recipe's, so its schedule is the recipe's, unless STEPS sets it: a linearly
# annealed schedule such as Reptile's only completes if STEPS fit in MINUTES), validates at the step where
# training ended, and the trainer scores that checkpoint on EPISODES fixed test episodes (seed 0).
# One JSON line per run goes to benchmarks/gradient/results.jsonl (via benchmarks/metric/run.sh).
# Usage: CPU=1 MINUTES=12 EPISODES=500 benchmarks/gradient/accuracy_runs.sh omniglot-maml-20w1s [...]
#        CPU=0 STEPS=11000 MINUTES=105 benchmarks/gradient/accuracy_runs.sh omniglot-reptile-5w1s
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
minutes=${MINUTES:-12}
for recipe in "$@"; do
  steps=${STEPS:-$(grep -A 3 "^train:" "$root/src/metalab/recipes/$recipe.yaml" | sed -n 's/^  steps: //p')}
  CPU=${CPU:-1} VALS=1 VAL_EPISODES=${VAL_EPISODES:-100} TAG=-${minutes}min RUN_ROOT=/tmp/metalab-gradient-bench \
    OUT="$root/benchmarks/gradient/results.jsonl" \
    "$root/benchmarks/metric/run.sh" "$recipe" "$steps" train.max_minutes="$minutes" eval.episodes="${EPISODES:-500}"
done
