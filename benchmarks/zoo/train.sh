#!/usr/bin/env bash
# Train one zoo model on Omniglot within a wall budget, then score it with `metalab eval` on the 1000 fixed test
# episodes of seed 0 (not a test: a benchmark). Wall and CPU seconds of each phase go to RUN/budget.txt, the eval's
# JSON line to RUN/eval-1000.json; `python benchmarks/zoo/build_entry.py RUN NAME` then makes the zoo entry.
# The trainer's own test at the end of training is cut to TEST_EPISODES (the 1000-episode score is `metalab eval`'s).
# Usage (from the project root): MINUTES=10 VAL_EVERY=100 bash benchmarks/zoo/train.sh omniglot-protonet-5w1s [k=v ...]
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/env.sh
recipe=$1; shift
minutes=${MINUTES:-10}
run=${RUN_ROOT:-runs/zoo}/$recipe-${minutes}min
python=${PYTHON:-python}
mkdir -p "$run"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
{ echo "uptime before training: $(uptime)"; } > "$run/budget.txt"
/usr/bin/time -f "train: %e s wall, %U s user + %S s system CPU" -a -o "$run/budget.txt" \
  nice -n 10 "$python" -m metalab train "$recipe" train.max_minutes="$minutes" train.val_every="${VAL_EVERY:-100}" \
    eval.val_episodes="${VAL_EPISODES:-100}" eval.episodes="${TEST_EPISODES:-50}" train.progress=false \
    run.tensorboard=false run.dir="$run" "$@"
echo "uptime before eval: $(uptime)" >> "$run/budget.txt"
/usr/bin/time -f "eval: %e s wall, %U s user + %S s system CPU" -a -o "$run/budget.txt" \
  nice -n 10 "$python" -m metalab eval "$run" --episodes 1000 --seed 0 --json > "$run/eval-1000.json"
cat "$run/budget.txt" "$run/eval-1000.json"
