#!/usr/bin/env bash
# Run the commands of a queue file one at a time (not a test): each pass takes the first line of
# QUEUE, removes it, and runs it with bash, so pending lines can be edited while the queue runs.
# Stops when the file is empty or when `date` is past STOP_AFTER (HH:MM UTC, default 20:35).
# Usage: benchmarks/metric/queue.sh QUEUE_FILE [PID_TO_WAIT_FOR]
set -uo pipefail
queue=$1
if [ -n "${2:-}" ]; then while kill -0 "$2" 2>/dev/null; do sleep 10; done; fi
while line=$(head -n 1 "$queue") && [ -n "$line" ]; do
  if [[ $(date -u +%H:%M) > ${STOP_AFTER:-20:35} ]]; then echo "$(date -u +%T) past ${STOP_AFTER:-20:35}: stopped"; break; fi
  sed -i 1d "$queue"
  echo "$(date -u +%T) start: $line"
  bash -c "$line"
  echo "$(date -u +%T) done ($?): $line"
done
