#!/bin/sh
# PEARL on 2D navigation (benchmarks/rl/RESULTS.md, section "2D navigation: PEARL"): one job, niced, one torch thread.
# Run from the repository root: sh benchmarks/rl/run_pearl.sh  (about 105 minutes wall on 2 shared cores)
set -e
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH=src
PY=${PYTHON:-python}
OUT=runs/bench-rl
# the recipe's networks (300 x 3) and batches (16 tasks x 256) cost about 3 s per gradient step here: smaller ones
SMALL="learner.hidden=[128,128,128] learner.encoder_hidden=[128,128,128] learner.train_meta_batch=8 learner.batch_size=128 learner.context_batch=32 learner.updates_per_step=50 learner.initial_episodes=2 learner.prior_episodes=1 learner.extra_posterior_episodes=1"
NAV="eval.episodes=40 eval.val_episodes=20 train.val_every=100 train.steps=100000 train.progress=false speed.threads=1"
nice -n 10 $PY -m metalab train navigation2d-pearl $SMALL $NAV train.max_minutes=30 run.dir=$OUT/nav-pearl
nice -n 10 $PY -m metalab train navigation2d-pearl $SMALL $NAV train.max_minutes=30 run.dir=$OUT/nav-pearl --resume
nice -n 10 $PY -m metalab plot $OUT/nav-pearl --tasks 3 --out benchmarks/rl/navigation-pearl-trajectories.png
nice -n 10 $PY benchmarks/rl/stay_at_origin.py navigation2d-pearl
# the rerun after the posterior-phase fix (RESULTS.md, "Rerun after checking the implementation against oyster";
# the measured reward-scale-5 run was stopped by hand after 7.5 minutes, at step 205, and its last.pt scored)
nice -n 10 $PY -m metalab train navigation2d-pearl $SMALL $NAV learner.reward_scale=5 train.max_minutes=21 run.dir=$OUT/nav-pearl-rs5
nice -n 10 $PY -m metalab train navigation2d-pearl $SMALL $NAV learner.reward_scale=5 learner.gamma=0.9 train.max_minutes=19 run.dir=$OUT/nav-pearl-g09
