#!/usr/bin/env bash
# ProtoNet on Omniglot: train the 1-shot and 5-shot recipes for a CPU budget of STEPS steps
# (the paper's 60-way training episodes; the 5-way and 20-way recipes of one shot count share
# their training settings and differ only in evaluation), then score each on 1000 fixed episodes
# of the Vinyals test split, and time `metalab eval`.
# Usage: STEPS=2000 bash benchmarks/protonet/run.sh   (from the project root, after scripts/setup.sh)
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/env.sh
STEPS=${STEPS:-2000}
OUT=${OUT:-runs/bench-protonet}
for shots in 1 5; do
  run="$OUT/omniglot-protonet-5w${shots}s-$STEPS"
  if [ ! -f "$run/results.json" ]; then
    start=$(date +%s)
    .venv/bin/metalab train omniglot-protonet-5w${shots}s train.steps=$STEPS train.val_every=500 \
      train.progress=false run.dir="$run"
    echo "train 60-way ${shots}-shot, $STEPS steps: $(( $(date +%s) - start )) s wall" | tee "$run/wall.txt"
  fi
  for ways in 5 20; do
    .venv/bin/metalab eval "$run" --ways $ways --shots $shots --episodes 1000 --seed 0 --json \
      | tee "$run/eval-${ways}w${shots}s.json"
  done
done
