#!/usr/bin/env bash
# The speed table of benchmarks/speed/RESULTS.md: MAML meta-iterations of metalab and its peers, 5-way and
# 20-way 1-shot, on the quiet 2-core machine with 2 threads. Appends JSON lines to benchmarks/speed/results.jsonl.
# Needs the peers in the project's venv and learn2learn 0.2.0 built in place at $L2L_SRC (see RESULTS.md).
# Usage: L2L_SRC=/tmp/l2l/learn2learn-0.2.0 bash benchmarks/speed/run.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
export PYTHONPATH=${L2L_SRC:?set L2L_SRC to the built learn2learn-0.2.0 source tree}
python=.venv/bin/python
out=benchmarks/speed/results.jsonl
peers="higher torchopt learn2learn"
# float64 agreement of the meta-gradients (4 tasks) before timing
$python benchmarks/speed/meta_iteration.py --check --threads 2 --ways 5 --configs so1 so5 fo5 \
  --libraries metalab metalab-folded metalab-ckpt $peers
$python benchmarks/speed/meta_iteration.py --threads 2 --iterations 5 --rounds 2 --warmup 1 --ways 5 \
  --configs so1 so5 fo5 --libraries plain plain-tasks-cl metalab metalab-bf16 metalab-folded $peers --json $out
$python benchmarks/speed/meta_iteration.py --threads 2 --iterations 5 --rounds 2 --warmup 1 --ways 20 \
  --configs so1 fo5 so5 --libraries plain-tasks-cl metalab metalab-bf16 $peers --json $out
