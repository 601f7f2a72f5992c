#!/usr/bin/env bash
# Accuracy effect of speed.precision=bf16 (not a test), two measurements:
#  1. training: sinusoid-maml-5shot trained twice, same seed and STEPS, in fp32 and in bf16; each
#     scored (in its own precision) on the recipe's 1000 fixed test tasks;
#  2. evaluation: an fp32-trained Omniglot run (RUN) scored in fp32 and in bf16 on the same EPISODES
#     fixed test episodes (same weights).
# Usage: STEPS=3000 CPU=1 RUN=/tmp/metalab-gradient-bench/omniglot-maml-20w1s-60000-12min EPISODES=100 \
#          benchmarks/gradient/bf16_accuracy.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
export METALAB_DATA=${METALAB_DATA:-$root/../shared/data}
metalab="$root/.venv/bin/metalab"
steps=${STEPS:-3000}
out=${OUT:-/tmp/metalab-bf16-accuracy}
mkdir -p "$out"
for precision in fp32 bf16; do
  run=$out/sinusoid-maml-5shot-$precision-$steps
  rm -rf "$run"
  /usr/bin/time -f "$precision training + test: %e s wall, %U s user" taskset -c "${CPU:-0}" "$metalab" train \
    sinusoid-maml-5shot speed.precision=$precision train.steps="$steps" train.val_every="$steps" \
    speed.threads=1 train.progress=false run.tensorboard=false run.dir="$run" > "$run.log" 2>&1
  grep -E "^test|training \+ test" "$run.log"
done
if [ -n "${RUN:-}" ]; then
  for precision in fp32 bf16; do
    taskset -c "${CPU:-0}" "$metalab" eval "$RUN" speed.precision=$precision --episodes "${EPISODES:-100}" \
      --threads 1 --batch 10 --json
  done
fi
