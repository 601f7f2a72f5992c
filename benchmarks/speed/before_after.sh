#!/usr/bin/env bash
# A refactor's effect on speed (not a test): benchmarks/speed/meta_iteration.py --interleave (metalab and higher
# taking turns in one process) run by an earlier checkout and by this one, alternately, per configuration, so
# that each metalab/higher ratio is measured beside its counterpart. Compare the ratios, not the seconds.
#
#   BEFORE=/path/to/earlier/checkout bash benchmarks/speed/before_after.sh [ROUNDS] [ITERATIONS]
#
# The earlier checkout runs its own meta_iteration.py with its own src/ on this project's .venv.
set -euo pipefail
cd "$(dirname "$0")/../.."
before=${BEFORE:?set BEFORE to the earlier checkout}
rounds=${1:-2}
iterations=${2:-5}
python=.venv/bin/python
for config in "5 so1" "5 so5" "5 fo5" "20 so1" "20 so5"; do
  set -- $config
  for round in $(seq "$rounds"); do
    for side in before after; do
      if [ "$side" = before ]; then src=$before/src; script=$before/benchmarks/speed/meta_iteration.py
      else src=$PWD/src; script=benchmarks/speed/meta_iteration.py; fi
      echo "# $side (round $round): ways $1, $2"
      PYTHONPATH=$src $python "$script" --interleave --libraries metalab higher --ways "$1" --configs "$2" \
        --iterations "$iterations" --warmup 1 --threads 2
    done
  done
done
