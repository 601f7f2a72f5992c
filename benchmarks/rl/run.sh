#!/bin/sh
# The meta-RL benchmark (benchmarks/rl/RESULTS.md): one job at a time, niced, one torch thread.
# Run from the repository root: sh benchmarks/rl/run.sh  (about 25 minutes wall on 2 shared cores)
set -e
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH=src
PY=${PYTHON:-python}
OUT=runs/bench-rl
NAV="task.meta_batch=10 task.shots=10 task.queries=10 eval.shots=10 eval.queries=10 eval.episodes=40 eval.val_episodes=0 train.val_every=0 train.steps=500 train.progress=false speed.threads=1"
BANDIT="task.shots=10 eval.shots=10 task.meta_batch=200 eval.episodes=1000 eval.val_episodes=0 train.val_every=0 train.steps=1000 train.progress=false speed.threads=1"
nice -n 10 $PY benchmarks/rl/throughput.py
nice -n 10 $PY -m metalab train navigation2d-maml-rl $NAV train.max_minutes=9 run.dir=$OUT/nav-maml
nice -n 10 $PY -m metalab train navigation2d-maml-rl $NAV learner.inner_steps=0 train.max_minutes=4 run.dir=$OUT/nav-pretrained
nice -n 10 $PY benchmarks/rl/random_init.py navigation2d-maml-rl $NAV
nice -n 10 $PY -m metalab plot $OUT/nav-maml --tasks 3 --out benchmarks/rl/navigation-maml-rl-trajectories.png
nice -n 10 $PY -m metalab train bandit-5-rl2 $BANDIT train.max_minutes=5 run.dir=$OUT/bandit-5-rl2
nice -n 10 $PY benchmarks/rl/bandit_baselines.py bandit-5-rl2 $BANDIT
nice -n 10 $PY benchmarks/rl/iteration_time.py cheetah-dir-maml-rl 4 5
nice -n 10 $PY benchmarks/rl/iteration_time.py cheetah-vel-maml-rl 4 5
nice -n 10 $PY benchmarks/rl/iteration_time.py metaworld-ml1-reach-maml-rl 4 5
