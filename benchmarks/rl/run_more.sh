#!/bin/sh
# The meta-RL benchmark's second part (benchmarks/rl/RESULTS.md, sections marked "run_more.sh"): bandit rows of
# the RL^2 paper's Table 1, E-MAML and RL^2 on 2D navigation, RL^2 on tabular MDPs, MAML-RL on HalfCheetah and
# Meta-World ML1 reach at reduced sizes. One job at a time, niced, one torch thread; each job's wall and CPU
# seconds go to $OUT/logs (GNU time). Run from the repository root:
#   sh benchmarks/rl/run_more.sh [bandits|bandit-baselines|navigation|tabular|mujoco|throughput|bandits-long|all]
# throughput also needs learn2learn's example folder and an import path holding learn2learn 0.2.0, cherry-rl and
# gym 0.21 (installed beside metalab, never into its environment: RESULTS.md says how):
#   L2L_EXAMPLES=.../learn2learn-0.2.0/examples/rl L2L_PATH=.../l2l-src:.../l2l-site sh benchmarks/rl/run_more.sh throughput
set -e
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH=src
PY=${PYTHON:-python}
OUT=${OUT:-runs/bench-rl}
LOGS=$OUT/logs
mkdir -p "$LOGS"
# job NAME COMMAND...: run one job niced, its output and GNU time's wall / CPU seconds in $LOGS/NAME.log
job() {
  name=$1; shift
  echo "$(date -u +%H:%M:%S) start $name" >> "$LOGS/timeline"
  /usr/bin/time -v nice -n 10 "$@" > "$LOGS/$name.log" 2>&1
  echo "$(date -u +%H:%M:%S) end $name" >> "$LOGS/timeline"
}
RUNTRAIN="train.val_every=0 train.progress=false speed.threads=1"
BANDIT="task.meta_batch=200 eval.episodes=1000 eval.val_episodes=0 train.steps=1000 $RUNTRAIN"
NAV="task.meta_batch=10 task.shots=10 task.queries=10 eval.shots=10 eval.queries=10 eval.episodes=40 \
eval.val_episodes=0 train.steps=500 $RUNTRAIN"
# HalfCheetah / Meta-World: 10 (5) tasks x 5 episodes instead of 40 x 20 (20 x 10), 20 test tasks, 0 and 1 step
CHEETAH="task.meta_batch=10 task.shots=5 task.queries=5 eval.shots=5 eval.queries=5 eval.episodes=20 \
eval.val_episodes=0 learner.eval_steps=1 train.steps=500 $RUNTRAIN"
REACH="task.meta_batch=5 task.shots=5 task.queries=5 eval.shots=5 eval.queries=5 eval.episodes=20 \
eval.val_episodes=0 learner.eval_steps=1 train.steps=500 $RUNTRAIN"
what=${1:-all}

if [ "$what" = bandits ] || [ "$what" = all ]; then
  for k in 10 50; do
    job bandit-$k-n10 $PY -m metalab train bandit-$k-rl2 $BANDIT task.shots=10 eval.shots=10 train.max_minutes=5 \
      run.dir=$OUT/bandit-$k-n10-rl2
  done
fi
if [ "$what" = bandit-baselines ] || [ "$what" = bandits ] || [ "$what" = all ]; then
  for n in 10 100 500; do
    for k in 5 10 50; do
      job baselines-k$k-n$n $PY benchmarks/rl/bandit_baselines.py bandit-$k-rl2 eval.shots=$n eval.episodes=1000
    done
  done
fi
if [ "$what" = navigation ] || [ "$what" = all ]; then
  # E-MAML for as many iterations as MAML-RL reached in run.sh (46), RL^2 in a 6-minute budget
  job nav-emaml $PY -m metalab train navigation2d-emaml $NAV train.steps=46 train.max_minutes=12 \
    run.dir=$OUT/nav-emaml
  job nav-rl2 $PY -m metalab train navigation2d-rl2 task.meta_batch=100 eval.episodes=40 eval.val_episodes=0 \
    train.steps=500 $RUNTRAIN train.max_minutes=6 run.dir=$OUT/nav-rl2
fi
if [ "$what" = tabular ] || [ "$what" = all ]; then
  job tabular-n10 $PY -m metalab train tabular-mdp-rl2 task.meta_batch=50 eval.episodes=1000 eval.val_episodes=0 \
    train.steps=1000 $RUNTRAIN train.max_minutes=5 run.dir=$OUT/tabular-n10-rl2
  job tabular-baselines-n10 $PY benchmarks/rl/mdp_baselines.py tabular-mdp-rl2 eval.episodes=1000
fi
if [ "$what" = mujoco ] || [ "$what" = all ]; then
  job cheetah-dir $PY -m metalab train cheetah-dir-maml-rl $CHEETAH train.max_minutes=8 run.dir=$OUT/cheetah-dir
  job cheetah-vel $PY -m metalab train cheetah-vel-maml-rl $CHEETAH train.max_minutes=8 run.dir=$OUT/cheetah-vel
  job reach $PY -m metalab train metaworld-ml1-reach-maml-rl $REACH train.max_minutes=8 run.dir=$OUT/reach
fi
if [ "$what" = throughput ] || [ "$what" = all ]; then
  # learn2learn's example and ours one after the other, so that both see about the same machine load
  if [ -n "$L2L_EXAMPLES" ]; then
    job l2l-throughput env PYTHONPATH="src:$L2L_PATH" $PY benchmarks/rl/l2l_throughput.py "$L2L_EXAMPLES"
  else
    echo "L2L_EXAMPLES is not set: learn2learn's example is not timed (see the header of this script)" >&2
  fi
  job throughput $PY benchmarks/rl/throughput.py
fi
if [ "$what" = bandits-long ] || [ "$what" = all ]; then
  # Table 1's n = 100 rows for k = 10 and 5 (20 trials of 100 pulls per batch: the 2000 pulls of the n = 10 runs)
  for k in 10 5; do
    job bandit-$k-n100 $PY -m metalab train bandit-$k-rl2 $BANDIT task.meta_batch=20 task.shots=100 eval.shots=100 \
      train.max_minutes=5 run.dir=$OUT/bandit-$k-n100-rl2
  done
fi
