#!/usr/bin/env bash
# Durable commit rate of recordfs (--sync always) against the classic atomic-write pattern
# (temp file + fsync + rename + directory fsync) done directly on the same disk, 1 and 4
# writers, runs interleaved, medians and ratios reported. The disk is a fresh ext4 on a loop
# device (the machine's / has no journal and slows after mass deletes; see FUSE-NOTES).
#   scripts/bench.sh [SECONDS_PER_RUN] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-3}
rounds=${2:-3}
scripts/setup.sh
cargo build --release -q
bin=$PWD/target/release/recordfs

. scripts/loopdisk.sh
echo "disk: fresh ext4 on $loop; $secs s per run, $rounds rounds, runs interleaved"

run_atomic() { mkdir -p "$disk/direct"; python3 scripts/bench_load.py atomic "$disk/direct" "$1" "$secs"; }
run_mount() { python3 scripts/bench_load.py mount "$mnt" "$1" "$secs"; }

RUST_LOG=info "$bin" mount "$disk/store" "$mnt" --sync always
declare -A results
for r in $(seq "$rounds"); do
  for w in 1 4; do
    results[atomic$w]+="$(run_atomic "$w") "
    results[mount$w]+="$(run_mount "$w") "
  done
done
umount "$mnt"
for _ in $(seq 100); do grep -q "unmounted cleanly\|not cleanly" "$disk/store/daemon.log" 2>/dev/null && break; sleep 0.1; done
stats=$(grep -o "stats: .*" "$disk/store/daemon.log" | tail -1 || true)

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
printf '\n%-44s %10s %10s %8s\n' "durable commits per second (median)" "recordfs" "atomic" "ratio"
for w in 1 4; do
  m=$(echo "${results[mount$w]}" | median)
  a=$(echo "${results[atomic$w]}" | median)
  printf '%-44s %10s %10s %8s\n' "create+write 500 B+close, $w writer(s)" "$m" "$a" "$(awk -v m="$m" -v a="$a" 'BEGIN {printf "%.2f", m/a}')"
done
echo "all runs: recordfs 1w: ${results[mount1]}| atomic 1w: ${results[atomic1]}| recordfs 4w: ${results[mount4]}| atomic 4w: ${results[atomic4]}"
[ -n "$stats" ] && echo "daemon $stats"
