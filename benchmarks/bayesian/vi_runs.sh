#!/usr/bin/env bash
# Short benchmark runs of PLATIPUS, BMAML and ABML (not a test), one at a time, niced, on one thread: each recipe
# trains for MINUTES of wall time (train.max_minutes; the recipe's schedule otherwise), the trainer validates on
# VAL_EPISODES and tests on EPISODES fixed episodes, then benchmarks/bayesian/score_vi.py scores the predictive
# distribution (NLL, coverage) and benchmarks/bayesian/ambiguity.py draws the ambiguity figure.
# Output: one JSON line per run in benchmarks/bayesian/results-vi.jsonl, ambiguity.png, logs in $RUN_ROOT.
# Usage: MINUTES=2 benchmarks/bayesian/vi_runs.sh sinusoid omniglot ambiguous
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
runs=${RUN_ROOT:-/tmp/metalab-bayes-vi}
out="$root/benchmarks/bayesian/results-vi.jsonl"
py="nice -n 10 env OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH=$root/src ${PYTHON:-python}"
minutes=${MINUTES:-2}

train() {  # recipe, extra overrides...
  local recipe=$1; shift
  $py -m metalab -q train "$recipe" train.max_minutes="$minutes" speed.threads=1 run.dir="$runs/$recipe" \
    eval.val_episodes="${VAL_EPISODES:-50}" eval.episodes="${EPISODES:-200}" "$@" > "$runs/$recipe.log" 2>&1
  tail -n 3 "$runs/$recipe.log"
}

mkdir -p "$runs"
for part in "$@"; do
  case $part in
    sinusoid)
      for learner in platipus bmaml abml; do
        train "sinusoid-$learner-5shot" train.val_every=100000
        $py "$root/benchmarks/bayesian/score_vi.py" "$runs/sinusoid-$learner-5shot" --episodes "${EPISODES:-200}" >> "$out"
      done ;;
    omniglot)
      for learner in platipus bmaml abml; do
        train "omniglot-$learner-5w1s" train.val_every=100000 data.root=/work/shared/data
        $py "$root/benchmarks/bayesian/score_vi.py" "$runs/omniglot-$learner-5w1s" --episodes "${EPISODES:-200}" \
          --set data.root=/work/shared/data >> "$out"
      done ;;
    ambiguous)
      for learner in platipus bmaml; do
        train "ambiguous-$learner-5shot" train.val_every=100000
        $py "$root/benchmarks/bayesian/score_vi.py" "$runs/ambiguous-$learner-5shot" --episodes "${EPISODES:-200}" \
          --set data.dataset=ambiguous >> "$out"
      done
      $py "$root/benchmarks/bayesian/ambiguity.py" "$runs/ambiguous-platipus-5shot" "$runs/ambiguous-bmaml-5shot" \
        --out "$root/benchmarks/bayesian/ambiguity.png" >> "$out" ;;
  esac
done
