#!/usr/bin/env bash
# Omniglot accuracy runs of the metric learners on a CPU core (not a test).
# Usage: benchmarks/metric/run.sh RECIPE STEPS [extra overrides...]
#   e.g. CPU=1 EXTRA_EVALS="5:1:1000" benchmarks/metric/run.sh omniglot-matching-20w1s 1000
# Trains RECIPE for STEPS steps on one thread pinned to core $CPU (default 1), validating every
# STEPS/VALS steps (VALS=2) on VAL_EPISODES=100 episodes (best.pt = best validation), and lets the
# trainer score best.pt on the recipe's 1000 fixed test episodes (seed 0). Then `metalab eval` for
# each WAYS:SHOTS:EPISODES of EXTRA_EVALS (default none). Appends one JSON line per score to
# benchmarks/metric/results.jsonl, with wall and process CPU seconds (/usr/bin/time).
set -euo pipefail
recipe=$1; steps=$2; shift 2
cpu=${CPU:-1}
vals=${VALS:-2}
export METALAB_DATA=${METALAB_DATA:-/work/shared/data}
root=$(cd "$(dirname "$0")/../.." && pwd)
metalab="$root/.venv/bin/metalab"
mkdir -p "${RUN_ROOT:-/tmp/metalab-metric-bench2}"
run=${RUN_ROOT:-/tmp/metalab-metric-bench2}/$recipe-$steps${TAG:-}
out=${OUT:-$root/benchmarks/metric/results.jsonl}
command="metalab train $recipe train.steps=$steps train.val_every=$((steps / vals)) eval.val_episodes=${VAL_EPISODES:-100} speed.eval_batch=10 speed.threads=1 train.progress=false run.tensorboard=false run.dir=$run $*"
started=$(date -u +%FT%TZ)
taskset -c "$cpu" /usr/bin/time -f '%e %U %S' -o "$run.train.time" \
  $root/.venv/bin/$command > "$run.train.log" 2>&1
"$root/.venv/bin/python" - "$run" "$recipe" "$steps" "$*" "$cpu" "$started" "$command" >> "$out" <<'PY'
import json, sys
def cpu_model():
    """The CPU as /proc/cpuinfo names it (name, family, model): runs on different machines do not compare."""
    fields = {}
    for line in open("/proc/cpuinfo"):
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return f"{fields.get('model name', '?')}, family {fields.get('cpu family', '?')} model {fields.get('model', '?')}"
run, recipe, steps, extra, cpu, started, command = sys.argv[1:]
wall, user, system = (float(v) for v in open(f"{run}.train.time").read().split()[-3:])
result = json.load(open(f"{run}/results.json"))
test = result["test"]
print(json.dumps({"recipe": recipe, "steps": result.get("steps", int(steps)),
                  "stopped_by_budget": result.get("stopped_by_budget", False), "overrides": extra, "cpu": int(cpu), "started": started,
                  "train_wall_s": wall, "train_cpu_s": round(user + system, 1), "eval": f"{test['ways']}w{test['shots']}s",
                  "accuracy": test["accuracy"], "ci95": test["ci95"], "episodes": test["episodes"],
                  "eval_wall_s": round(test["seconds"], 1), "checkpoint": result["checkpoint"],
                  "best_val": result.get("best_val"), "cpu_model": cpu_model(), "run": run, "command": command}))
PY
for setting in ${EXTRA_EVALS-}; do
  IFS=: read -r ways shots episodes <<< "$setting"
  tag="${ways}w${shots}s-$episodes"
  eval_command="metalab eval $run --ways $ways --shots $shots --episodes $episodes --threads 1 --batch 10 --json"
  taskset -c "$cpu" /usr/bin/time -f '%e %U %S' -o "$run.eval-$tag.time" \
    $root/.venv/bin/$eval_command > "$run.eval-$tag.json" 2> "$run.eval-$tag.log"
  "$root/.venv/bin/python" - "$run" "$recipe" "$steps" "$*" "$cpu" "$tag" "$eval_command" >> "$out" <<'PY'
import json, sys
run, recipe, steps, extra, cpu, tag, command = sys.argv[1:]
wall, user, system = (float(v) for v in open(f"{run}.eval-{tag}.time").read().split()[-3:])
r = json.loads(open(f"{run}.eval-{tag}.json").read().strip().splitlines()[-1])
result = json.load(open(f"{run}/results.json"))
print(json.dumps({"recipe": recipe, "steps": result.get("steps", int(steps)),
                  "stopped_by_budget": result.get("stopped_by_budget", False), "overrides": extra, "cpu": int(cpu),
                  "eval": f"{r['ways']}w{r['shots']}s", "accuracy": r["accuracy"], "ci95": r["ci95"],
                  "episodes": r["episodes"], "eval_wall_s": round(r["seconds"], 1), "process_wall_s": wall,
                  "process_cpu_s": round(user + system, 1), "run": run, "command": command}))
PY
done
