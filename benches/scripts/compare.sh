#!/usr/bin/env bash
# Compares two builds of the ingest bench case by case, runs alternated (never two at once).
#
#   benches/scripts/compare.sh BEFORE AFTER [ROUNDS] [CASE...]
#
# BEFORE and AFTER are ingest bench executables (`cargo bench -p salespulse-bench --bench
# ingest --no-run` prints the path; copy it away before building the other commit). Each round
# runs one case in BEFORE, then in AFTER (each prints the median of 5 repetitions); the line
# per case gives both medians over the rounds and the median of the per-round ratios.
set -euo pipefail
before=$1 after=$2 rounds=${3:-3}
shift $(($# < 3 ? $# : 3))
cases=("$@")
if [ ${#cases[@]} -eq 0 ]; then
  cases=(
    "deals JSON, 100 reps, 30 d span" "deals JSON, 10000 reps, 30 d span"
    "activities JSON, 100 reps, 30 d span" "activities JSON, 10000 reps, 30 d span"
    "deals protobuf, 100 reps, 30 d span" "deals protobuf, 10000 reps, 30 d span"
    "activities protobuf, 100 reps, 30 d span" "activities protobuf, 10000 reps, 30 d span"
    "deals protobuf, 1000 reps, facts spread over 1 h" "deals protobuf, 1000 reps, facts spread over 24 h"
    "deals protobuf, 1000 reps, facts spread over 30 d" "deals protobuf, 1000 reps, facts spread over 300 d"
  )
fi
rate() { BENCH_ONLY="$2" "$1" | grep -F "$2" | awk '{for (i = 1; i < NF; i++) if ($(i + 1) == "records/s") print $i}'; }
median() { sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
for c in "${cases[@]}"; do
  runs=$(for _ in $(seq "$rounds"); do echo "$(rate "$before" "$c") $(rate "$after" "$c")"; done)
  printf '%s | %s | %s | %s | %s\n' "$c" \
    "$(echo "$runs" | awk '{print $1}' | median)" "$(echo "$runs" | awk '{print $2}' | median)" \
    "$(echo "$runs" | awk '{printf "%.2f\n", $2 / $1}' | median)" \
    "$(echo "$runs" | awk '{printf "%.2f ", $2 / $1}')"
done
