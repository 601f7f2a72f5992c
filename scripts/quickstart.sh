#!/usr/bin/env bash
# The main job: set up, meta-train ProtoNet on Omniglot 5-way 1-shot (a short CPU budget),
# and print its test accuracy +- 95% CI on 1000 fixed episodes of the Vinyals test split.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
run_dir=${RUN_DIR:-runs/quickstart-$(date +%Y%m%d-%H%M%S)}
.venv/bin/metalab train omniglot-protonet-5w1s \
  train.steps=${STEPS:-500} train.val_every=250 eval.val_episodes=100 run.dir="$run_dir" "$@"
echo "run directory: $run_dir (results.json, metrics.jsonl, tensorboard/, best.pt)"
