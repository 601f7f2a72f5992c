#!/usr/bin/env bash
# Short Omniglot accuracy runs of the metric learners on a shared CPU (not a test).
# Usage: benchmarks/metric/run.sh ALGORITHM STEPS [extra overrides...]
# Trains omniglot-ALGORITHM-5w1s for STEPS steps (1 thread), scores it on the recipe's 1000 fixed
# 5-way 1-shot test episodes (the trainer's test), then `metalab eval` on 1000 20-way 1-shot episodes.
# Appends one JSON line per evaluation to benchmarks/metric/results.jsonl.
set -euo pipefail
algorithm=$1; steps=$2; shift 2
recipe=${RECIPE:-omniglot-$algorithm-5w1s}
export METALAB_DATA=${METALAB_DATA:-/work/shared/data}
root=$(cd "$(dirname "$0")/../.." && pwd)
metalab="$root/.venv/bin/metalab"
run=${RUN_ROOT:-/tmp/metalab-metric-bench}/$recipe-$steps${TAG:-}
out="$root/benchmarks/metric/results.jsonl"
start=$(date +%s)
"$metalab" train "$recipe" train.steps="$steps" train.val_every=$((steps / 2)) eval.val_episodes=100 \
  train.threads=1 train.progress=false run.tensorboard=false run.dir="$run" "$@" > "$run.train.log" 2>&1
train_seconds=$(( $(date +%s) - start ))
python3 - "$run" "$recipe" "$steps" "$train_seconds" "$*" >> "$out" <<'PY'
import json, sys
run, recipe, steps, seconds, extra = sys.argv[1:]
result = json.load(open(f"{run}/results.json"))
test = result["test"]
print(json.dumps({"recipe": recipe, "steps": int(steps), "overrides": extra, "train_wall_s": int(seconds),
                  "eval": f"{test['ways']}w{test['shots']}s", "accuracy": test["accuracy"], "ci95": test["ci95"],
                  "episodes": test["episodes"], "eval_wall_s": round(test["seconds"], 1), "checkpoint": result["checkpoint"],
                  "run": run}))
PY
for setting in ${EXTRA_EVALS-20:1}; do
  ways=${setting%:*}; shots=${setting#*:}
  "$metalab" eval "$run" --ways "$ways" --shots "$shots" --episodes 1000 --threads 1 --json \
    | python3 -c "import json,sys; r=json.loads(sys.stdin.read().strip().splitlines()[-1]); print(json.dumps({'recipe': '$recipe', 'steps': $steps, 'overrides': '$*', 'eval': f\"{r['ways']}w{r['shots']}s\", 'accuracy': r['accuracy'], 'ci95': r['ci95'], 'episodes': r['episodes'], 'eval_wall_s': round(r['seconds'], 1), 'run': '$run'}))" >> "$out"
done
