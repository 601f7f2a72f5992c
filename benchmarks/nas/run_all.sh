#!/usr/bin/env bash
# The NAS benchmark of benchmarks/nas/RESULTS.md, one run at a time, niced, one thread each (2 shared cores).
# Usage: bash benchmarks/nas/run_all.sh [OUT]   (OUT default runs/nas-bench; data root $METALAB_DATA or /work/shared/data)
set -euo pipefail
OUT=${1:-runs/nas-bench}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONUNBUFFERED=1
export METALAB_DATA=${METALAB_DATA:-/work/shared/data}
ML="nice -n 10 python -m metalab"
SPACE="space.cells=2 space.channels=8 space.nodes=3 space.reductions=[1] search.batch=32 threads=1"
mkdir -p "$OUT"
log() { echo "== $(date -u +%H:%M:%S) $*"; }

log "1. DARTS first order on digits: search 150 steps, retrain 400 steps (derived: 3 cells of 16) vs Conv-4"
time $ML nas search digits-darts $SPACE search.steps=150 retrain.steps=400 retrain.cells=3 \
  run_dir="$OUT/digits-darts-1st" --json
log "2. DARTS second order on digits: search 60 steps, retrain 400 steps"
time $ML nas search digits-darts $SPACE search.order=2 search.steps=60 search.eval_every=10 retrain.steps=400 \
  retrain.cells=3 retrain.baseline=false run_dir="$OUT/digits-darts-2nd" --json
$ML plot "$OUT/digits-darts-1st"

log "3. warm-started vs cold DARTS on 5 digit-class subsets x 2 seeds (source: classes 0-4, 80 steps; targets: 36)"
time nice -n 10 python benchmarks/nas/warm_start.py --out "$OUT/warm2" --source-steps 80 --steps 36 --eval-every 4 \
  --seeds 0 1 --arms alpha+weights

EPISODES="eval.episodes=100 train.val_every=0 train.progress=false run.tensorboard=false train.steps=100000"
log "4. MetaNAS Omniglot 5w1s, 12 minutes of meta-training (scaled-down network, the recipe's other settings)"
time $ML train omniglot-metanas-5w1s $EPISODES train.max_minutes=12 train.log_every=5 learner.channels=4 \
  learner.cells=2 learner.nodes=3 learner.reductions=[1] task.meta_batch=2 learner.inner_steps_test=10 \
  learner.warm_up_steps=20 run.dir="$OUT/metanas-5w1s-12min"
log "5. Reptile and MAML with Conv-4, Omniglot 5w1s, the same 12 minutes, 100 test episodes"
time $ML train omniglot-reptile-5w1s $EPISODES train.max_minutes=12 learner.inner_steps_test=10 \
  optim.lr_final=null run.dir="$OUT/reptile-5w1s-12min"
time $ML train omniglot-maml-5w1s eval.episodes=100 train.val_every=0 train.progress=false run.tensorboard=false \
  train.max_minutes=12 run.dir="$OUT/maml-5w1s-12min"
python benchmarks/nas/metanas_sizes.py "$OUT/metanas-5w1s-12min"
$ML plot "$OUT/metanas-5w1s-12min" --out "$OUT/metanas-5w1s-12min/curves.png"
log "done"
