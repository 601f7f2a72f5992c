#!/usr/bin/env bash
# Accuracy effect of the bf16 path: the same MAML 5w1s run (same seed, same STEPS) in fp32 and in bf16,
# each scored on the 1000 fixed 5w1s test episodes. Usage: STEPS=600 CPU=0 benchmarks/gradient/bf16_accuracy.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
export METALAB_DATA=${METALAB_DATA:-$root/../shared/data}
steps=${STEPS:-600}
out=${OUT:-/tmp/metalab-bf16-accuracy}
mkdir -p "$out"
for precision in fp32 bf16; do
  run=$out/omniglot-maml-5w1s-$precision-$steps
  rm -rf "$run"
  /usr/bin/time -f "$precision: %e s wall, %U s user" taskset -c "${CPU:-0}" "$root/.venv/bin/metalab" train omniglot-maml-5w1s \
    learner.precision=$precision train.steps=$steps train.val_every=$((steps / 2)) train.ckpt_every=$((steps / 2)) \
    train.threads=1 train.progress=false run.tensorboard=false run.dir="$run" > "$run.log" 2>&1
  tail -n 1 "$run.log"
  python3 -c "import json,sys; t=json.load(open('$run/results.json'))['test']; print('$precision', t['accuracy'], t['ci95'], t['episodes'])"
done
