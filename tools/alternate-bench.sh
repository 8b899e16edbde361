#!/bin/bash
# Compares billhook builds by alternating single saturated bench runs of each: the
# machine's speed drifts by the hour, by more than most changes, so runs of one build
# after the other compare hours, not builds. Copy each build out of target/ first.
#
#   tools/alternate-bench.sh [-n ROUNDS] BINARY_A BINARY_B [-- BENCH_ARGS...]
#
# Default bench arguments: the README's saturated run. Prints each run's deliveries
# per second, share of the ceiling and CPU per event, then each build's median share.
set -euo pipefail
rounds=4
if [ "${1:-}" = "-n" ]; then rounds=$2; shift 2; fi
builds=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do builds+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
args=("$@")
[ ${#args[@]} -eq 0 ] && args=(--events 30000 --concurrency 128 --clients 1000)
[ ${#builds[@]} -ge 2 ] || { echo "usage: $0 [-n ROUNDS] BINARY_A BINARY_B [-- BENCH_ARGS...]" >&2; exit 2; }
declare -A shares
for ((r = 1; r <= rounds; r++)); do
  for b in "${builds[@]}"; do
    out=$("$b" bench --runs 1 "${args[@]}" 2>&1)
    line=$(grep -E "^ +deliveries:" <<<"$out" | tr -s ' ')
    cpu=$(grep -E "^ +CPU per event" <<<"$out" | tr -s ' ' | cut -d: -f2)
    share=$(grep -oE "[0-9.]+ % of ceiling" <<<"$line" | cut -d' ' -f1)
    echo "round $r $b:$line;$cpu"
    shares[$b]="${shares[$b]:-} $share"
  done
done
for b in "${builds[@]}"; do
  median=$(tr ' ' '\n' <<<"${shares[$b]}" | grep . | sort -n | awk '{a[NR]=$1} END {printf "%.1f", (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}')
  echo "$b: median share ${median} % of${shares[$b]}"
done
