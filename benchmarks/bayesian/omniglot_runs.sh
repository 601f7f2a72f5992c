#!/usr/bin/env bash
# Omniglot runs of several learners at one wall-clock budget (not a test): one run at a time (train.sh, niced, one
# thread), then each scored on the same fixed test episodes by `metalab eval --json` (score.sh: accuracy, NLL, ECE,
# Brier, each +- 95% CI). LLAMA runs with its Laplace posterior on the head (learner.laplace_layers=head).
# Usage: MINUTES=2 EPISODES=50 bash benchmarks/bayesian/omniglot_runs.sh 20w1s platipus bmaml abml llama \
#          neural-statistician maml protonet
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
setting=$1; shift
for learner in "$@"; do
  extra=(); [ "$learner" = llama ] && extra=(learner.laplace_layers=head)
  bash "$here/train.sh" "${MINUTES:-2}" "$learner-$setting" "omniglot-$learner-$setting" "${extra[@]}"
  bash "$here/score.sh" "${EPISODES:-100}" "$learner-$setting"
done
