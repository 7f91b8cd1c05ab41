#!/usr/bin/env bash
# Runs the crash tests of tests/it/resume.rs for many seeds (CI runs seeds 1..6 of the
# threaded test and 1..3 of the worker-process test):
#
#   scripts/crash-seeds.sh [FIRST] [LAST]      # default 1 200
#
# Each seed prepares a chained zarr pipeline, kills its scheduler (and, with worker processes,
# its workers) with SIGKILL at seed-chosen points, reruns it until it finishes, and checks that
# the output is bit-identical to an uninterrupted run and that no block recorded as done ran
# again. The last lines summarise the seeds and crashes.
set -euo pipefail
first=${1:-1}
last=${2:-200}
cd "$(dirname "$0")/.."
log=$(mktemp)
BLOCKWISE_CRASH_SEEDS="$first..$((last + 1))" \
    cargo test --release --test it resume:: -- --nocapture --test-threads=1 2>&1 | tee "$log" | grep -E '^seed|test result|panicked'
threads=$(grep -oE 'seed [0-9]+: [0-9]+ crashes' "$log" | wc -l)
processes=$(grep -oE 'seed [0-9]+ \(processes\): [0-9]+ crashes' "$log" | wc -l)
crashes=$(grep -oE '[0-9]+ crashes' "$log" | awk '{s += $1} END {print s + 0}')
echo "seeds passed: $threads (threads), $processes (worker processes); crashes survived: $crashes"
rm -f "$log"
