#!/usr/bin/env bash
# The speed tables of benchmarks/speed/RESULTS.md: MAML meta-iterations of metalab and its peers, 5-way and
# 20-way 1-shot, with 2 threads on the 2-core machine; then the compute floor and the allocator measurement.
# Appends JSON lines to benchmarks/speed/results.jsonl.
# Needs the peers in the project's venv and learn2learn 0.2.0 built in place at $L2L_SRC (see RESULTS.md).
# Usage: L2L_SRC=/tmp/l2l/learn2learn-0.2.0 bash benchmarks/speed/run.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
export PYTHONPATH=${L2L_SRC:?set L2L_SRC to the built learn2learn-0.2.0 source tree}
python=.venv/bin/python
out=benchmarks/speed/results.jsonl
peers="higher torchopt learn2learn"
# 2026-12-07, 04:49-05:01 UTC (same CPU): where so5's time goes, then the libraries turn by turn in one process
# (the same allocator setting for all)
$python benchmarks/speed/meta_iteration.py --profile metalab 5 so5 --threads 2
$python benchmarks/speed/meta_iteration.py --interleave --threads 2 --iterations 12 --warmup 1 --ways 5 --configs so5 \
  --libraries metalab metalab-chunk3 $peers --json $out
# 2026-12-06, 19:50-20:01 UTC (same CPU): the task-threads experiment ran from a checkout of the local branch
# task-threads (commit 29a9645, not merged); its commands are in RESULTS.md (its `metalab-one-task-thread` path
# exists only there)
# 2026-12-06, 17:04-17:20 UTC (same CPU): the checkpointed unroll (learner.checkpoint_inner_loop), then the 5-way
# target measured again with 3 rounds
$python benchmarks/speed/meta_iteration.py --check --threads 2 --ways 5 --configs so1 so5 \
  --libraries metalab metalab-ckpt-inner metalab-ckpt-inner-task-by-task higher
$python benchmarks/speed/meta_iteration.py --threads 2 --iterations 3 --rounds 2 --warmup 1 --ways 5 --configs so5 \
  --libraries metalab metalab-ckpt-inner metalab-ckpt-inner-task-by-task metalab-ckpt-inner-chunk8 higher --json $out
$python benchmarks/speed/meta_iteration.py --threads 2 --iterations 2 --rounds 1 --warmup 1 --ways 20 --configs so5 \
  --libraries metalab metalab-ckpt-inner torchopt higher --json $out
$python benchmarks/speed/meta_iteration.py --threads 2 --iterations 3 --rounds 3 --warmup 1 --ways 5 \
  --configs so5 fo5 --libraries metalab $peers --json $out
# the tables of 2026-12-06, on an AVX2 CPU (AMD EPYC, Zen 3): slices of tasks on every CPU, NNPACK by default
# only for 150+ images (metalab-winograd forces it at 5 ways), with the agreement check first
$python benchmarks/speed/meta_iteration.py --check --threads 2 --ways 5 --configs so1 so5 fo5 \
  --libraries metalab metalab-task-by-task $peers
$python benchmarks/speed/meta_iteration.py --threads 2 --iterations 3 --rounds 2 --warmup 1 --ways 5 \
  --configs so1 so5 fo5 --libraries plain-tasks-cl metalab metalab-task-by-task metalab-winograd $peers --json $out
$python benchmarks/speed/meta_iteration.py --threads 2 --iterations 3 --rounds 2 --warmup 1 --ways 5 \
  --configs so5 --libraries metalab-chunk2 metalab-chunk3 metalab-chunk4
$python benchmarks/speed/meta_iteration.py --threads 2 --iterations 2 --rounds 1 --warmup 1 --ways 20 \
  --configs so1 so5 --libraries metalab metalab-winograd $peers --json $out
$python benchmarks/speed/meta_iteration.py --threads 2 --iterations 2 --rounds 2 --warmup 1 --ways 20 \
  --configs so5 --libraries metalab metalab-no-winograd torchopt --json $out
$python benchmarks/speed/meta_iteration.py --profile metalab 5 so5 --threads 2
$python benchmarks/speed/native_kernels.py --parts convolution
# the tables of 2026-12-02 evening, on an AVX-512 CPU (AMD EPYC, Zen 5): NNPACK off by default there
# (metalab-winograd forces it), the inner loop folded over the tasks as an option (metalab-folded-inner)
$python benchmarks/speed/native_kernels.py --parts convolution
$python benchmarks/speed/meta_iteration.py --threads 2 --iterations 3 --rounds 2 --warmup 1 --ways 5 \
  --configs so1 so5 fo5 --libraries plain-tasks-cl metalab metalab-winograd metalab-folded-inner $peers --json $out
$python benchmarks/speed/meta_iteration.py --threads 2 --iterations 2 --rounds 2 --warmup 1 --ways 20 \
  --configs so1 so5 fo5 --libraries plain-tasks-cl metalab metalab-folded-inner $peers --json $out
# float64 agreement of the meta-gradients (4 tasks) before timing
$python benchmarks/speed/meta_iteration.py --check --threads 2 --ways 5 --configs so1 so5 fo5 \
  --libraries metalab metalab-no-native metalab-no-fold metalab-folded metalab-ckpt $peers
# the compute floor (query-pass convolutions at the best measured rate) and a Winograd trial
$python benchmarks/speed/conv_floor.py --winograd
# the tables of 2026-12-02, 04:30-06:00 UTC (the BatchNorm kernel differentiable twice): a process per library,
# 20-way second order 5 and 1 steps, then 5-way; then the kernels alone (second-order rows included)
for round in 1 2; do
  $python benchmarks/speed/meta_iteration.py --threads 2 --iterations 2 --rounds 1 --warmup 1 --ways 20 \
    --configs so5 --libraries metalab $peers --json $out
done
$python benchmarks/speed/meta_iteration.py --threads 2 --iterations 3 --rounds 1 --warmup 1 --ways 20 \
  --configs so1 --libraries metalab $peers --json $out
$python benchmarks/speed/meta_iteration.py --threads 2 --iterations 3 --rounds 2 --warmup 1 --ways 5 \
  --configs so1 so5 fo5 --libraries plain-tasks-cl metalab $peers --json $out
$python benchmarks/speed/meta_iteration.py --threads 2 --iterations 2 --rounds 1 --warmup 1 --ways 20 \
  --configs so5 --allocator all --libraries metalab $peers --json $out
$python benchmarks/speed/native_kernels.py
$python benchmarks/speed/meta_iteration.py --profile metalab 5 so1 --threads 2
$python benchmarks/speed/meta_iteration.py --threads 2 --iterations 3 --rounds 1 --warmup 1 --ways 20 \
  --configs so1 --libraries metalab $peers --json $out
$python benchmarks/speed/meta_iteration.py --interleave --iterations 3 --warmup 1 --ways 20 --configs so5 \
  --libraries metalab $peers --json $out
# the tables of 2026-12-02 (compiled kernels): libraries take turns (rounds), each in a fresh process
$python benchmarks/speed/meta_iteration.py --threads 2 --iterations 3 --rounds 2 --warmup 1 --ways 5 \
  --configs so1 so5 fo5 --libraries plain-tasks-cl metalab metalab-no-native $peers --json $out
$python benchmarks/speed/meta_iteration.py --threads 2 --iterations 3 --rounds 2 --warmup 1 --ways 20 \
  --configs so1 --libraries metalab metalab-no-native $peers --json $out
# the same with every library in one process, turn by turn (drift-free ratios), then 20-way with freed memory
# kept in every process; and the compiled kernels against the PyTorch operations they replace
$python benchmarks/speed/meta_iteration.py --interleave --iterations 6 --warmup 1 --ways 5 --configs so1 \
  --libraries metalab metalab-no-native $peers --json $out
$python benchmarks/speed/meta_iteration.py --interleave --iterations 4 --warmup 1 --ways 20 --configs so1 \
  --libraries metalab $peers --json $out
$python benchmarks/speed/meta_iteration.py --threads 2 --iterations 3 --rounds 2 --warmup 1 --ways 20 \
  --configs so1 --allocator all --libraries metalab higher learn2learn --json $out
$python benchmarks/speed/native_kernels.py
$python benchmarks/speed/meta_iteration.py --threads 2 --iterations 2 --rounds 1 --warmup 1 --ways 20 \
  --configs so5 --libraries metalab higher learn2learn --json $out
# the tables of 2026-12-01
$python benchmarks/speed/meta_iteration.py --threads 2 --iterations 4 --rounds 3 --warmup 1 --ways 5 \
  --configs so1 so5 fo5 --libraries plain-tasks-cl metalab metalab-no-fold $peers --json $out
$python benchmarks/speed/meta_iteration.py --threads 2 --iterations 5 --rounds 2 --warmup 1 --ways 20 \
  --configs so1 --libraries plain-tasks-cl metalab $peers --json $out
# metalab with and without its allocator setting (system time, page faults), then every process with freed
# memory kept for reuse, the peers included
$python benchmarks/speed/meta_iteration.py --threads 2 --iterations 4 --rounds 3 --warmup 1 --ways 5 \
  --configs so1 so5 --libraries metalab metalab-default-malloc --json $out
$python benchmarks/speed/meta_iteration.py --threads 2 --iterations 5 --rounds 2 --warmup 1 --ways 5 \
  --configs so1 --allocator all --libraries plain-tasks-cl metalab $peers --json $out
# the same at 20 ways (short: 1 round of 1 warm-up + 2 timed iterations)
$python benchmarks/speed/meta_iteration.py --threads 2 --iterations 2 --rounds 1 --warmup 1 --ways 20 \
  --configs so1 --allocator all --libraries metalab $peers --json $out
