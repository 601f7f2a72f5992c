#!/usr/bin/env bash
# Short accuracy runs of Meta-Curvature, T-net and MT-net (issue 27) within a stated wall budget (not a test).
# Each recipe trains on one thread, niced, for at most MINUTES of wall time (train.max_minutes; train.steps and
# the schedule stay the recipe's), validates once where training stopped, and the trainer scores that checkpoint
# on EPISODES fixed test episodes (seed 0). One JSON line per run goes to benchmarks/gradient/results.jsonl.
# Usage: MINUTES=3 EPISODES=200 benchmarks/gradient/curvature_runs.sh omniglot-metacurvature-5w1s [...]
#        EXTRA="learner.inner_solver=hessian-free" TAG=-hf benchmarks/gradient/curvature_runs.sh omniglot-imaml-5w1s
# (EXTRA: more overrides for every recipe named; TAG: appended to the run directory's name)
# METALAB (default: the metalab on PATH) and METALAB_DATA (default /work/shared/data) may be set.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
metalab=${METALAB:-metalab}
export METALAB_DATA=${METALAB_DATA:-/work/shared/data} OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
minutes=${MINUTES:-3}
for recipe in "$@"; do
  steps=$(grep -A 3 "^train:" "$root/src/metalab/recipes/$recipe.yaml" | sed -n 's/^  steps: //p')
  run=${RUN_ROOT:-/tmp/metalab-curvature-bench}/$recipe-${minutes}min${TAG:-}
  command="metalab train $recipe train.max_minutes=$minutes train.val_every=$steps eval.val_episodes=${VAL_EPISODES:-50} eval.episodes=${EPISODES:-200} speed.threads=1 train.progress=false run.tensorboard=false run.dir=$run${EXTRA:+ $EXTRA}"
  started=$(date -u +%FT%TZ)
  mkdir -p "$(dirname "$run")"
  /usr/bin/time -f '%e %U %S' -o "$run.time" nice -n 10 $metalab ${command#metalab } > "$run.log" 2>&1
  ${PYTHON:-python} - "$run" "$recipe" "$started" "$command" >> "$root/benchmarks/gradient/results.jsonl" <<'PY'
import json, sys
run, recipe, started, command = sys.argv[1:]
wall, user, system = (float(v) for v in open(f"{run}.time").read().split()[-3:])
result = json.load(open(f"{run}/results.json"))
test = result["test"]
print(json.dumps({"recipe": recipe, "steps": result.get("steps"), "stopped_by_budget": result.get("stopped_by_budget"),
                  "started": started, "wall_s": wall, "cpu_s": round(user + system, 1),
                  "metric": {k: test[k] for k in test if k not in ("seconds",)}, "best_val": result.get("best_val"),
                  "checkpoint": result.get("checkpoint"), "command": command}))
PY
  tail -n 1 "$root/benchmarks/gradient/results.jsonl"
done
