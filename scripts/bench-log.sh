#!/usr/bin/env bash
# The log's lifecycle, measured on a fresh ext4 loop device:
# 1. commit latency (p50/p99, create + write 500 B + close, --sync always) while the mount
#    compacts all the time (--log-limit 64 KiB) against without compaction, runs interleaved;
# 2. mount (recovery) time of a store with COMMITS commits in its log against the same store
#    after `recordfs compact`.
#   scripts/bench-log.sh [SECONDS_PER_RUN] [ROUNDS] [COMMITS]   (COMMITS=0: latency only)
# With BASE_BIN=/path/to/recordfs, that binary's latencies are measured too, in the same rounds.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-3}
rounds=${2:-3}
commits=${3:-100000}
scripts/setup.sh
cargo build --release -q
bin=$PWD/target/release/recordfs
. scripts/loopdisk.sh
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

run() { # $1: binary, $2: label, rest: mount options
  local b=$1 label=$2; shift 2
  rm -rf "$disk/store"
  "$b" mount "$disk/store" "$mnt" "$@" >/dev/null
  read -r p50 p99 n < <(python3 scripts/bench_latency.py "$mnt" "$secs")
  umount "$mnt"
  for _ in $(seq 200); do grep -q "unmounted cleanly\|not cleanly" "$disk/store/daemon.log" 2>/dev/null && break; sleep 0.05; done
  local compactions
  compactions=$(grep -c "compacted the log" "$disk/store/daemon.log" || true)
  p50s[$label]+="$p50 "; p99s[$label]+="$p99 "; counts[$label]+="$compactions "
}
declare -A p50s p99s counts
echo "== commit latency with and without online compaction ($secs s runs, $rounds rounds, interleaved)"
builds=(this)
[ -n "${BASE_BIN:-}" ] && builds+=(base)
binary() { if [ "$1" = base ]; then echo "$BASE_BIN"; else echo "$bin"; fi; }
for _ in $(seq "$rounds"); do
  for v in "${builds[@]}"; do
    run "$(binary "$v")" "$v plain" --log-limit $((1 << 30))
    run "$(binary "$v")" "$v compacting" --log-limit 65536
  done
done
printf '%-28s %10s %10s %14s\n' "" "p50 (µs)" "p99 (µs)" "compactions"
for v in "${builds[@]}"; do
  for l in "$v plain" "$v compacting"; do
    printf '%-28s %10s %10s %14s\n' "$l" "$(echo "${p50s[$l]}" | median)" "$(echo "${p99s[$l]}" | median)" "${counts[$l]}"
  done
  awk -v v="$v" -v a="$(echo "${p50s[$v compacting]}" | median)" -v b="$(echo "${p50s[$v plain]}" | median)" \
      -v c="$(echo "${p99s[$v compacting]}" | median)" -v d="$(echo "${p99s[$v plain]}" | median)" \
      'BEGIN {printf "%s: ratio compacting/plain: p50 %.2f, p99 %.2f\n", v, a/b, c/d}'
done

[ "$commits" -gt 0 ] || exit 0
echo "== mount time of $commits commits in the log, then after compaction"
rm -rf "$disk/store"
"$bin" mount "$disk/store" "$mnt" --sync never --log-limit $((1 << 40)) >/dev/null
python3 - "$mnt" "$commits" <<'PY'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
names = [os.path.join(d, f"{i:08x}-0000-4000-8000-000000000000.json") for i in range(200)]
for i in range(n):  # each save of an existing record is one commit (the 200 creates add 400)
    with open(names[i % 200], "w") as f:
        f.write('{"i": %d}' % i)
PY
umount "$mnt"
for _ in $(seq 600); do grep -q "unmounted cleanly\|not cleanly" "$disk/store/daemon.log" 2>/dev/null && break; sleep 0.1; done
entries=$("$bin" stats --json "$disk/store" | python3 -c 'import json,sys; print(json.load(sys.stdin)["log_entries"])')
mount_time() {
  local t0 t1
  t0=$(date +%s%N)
  "$bin" mount "$disk/store" "$mnt" --log-limit $((1 << 40)) >/dev/null
  t1=$(date +%s%N)
  umount "$mnt"
  for _ in $(seq 600); do [ "$(grep -c "unmounted cleanly\|not cleanly" "$disk/store/daemon.log")" -ge "$1" ] && break; sleep 0.1; done
  echo $(((t1 - t0) / 1000000))
}
before=$(mount_time 2)
"$bin" compact "$disk/store" >/dev/null
after=$(mount_time 3)
echo "log entries before compaction: $entries"
echo "mount time: $before ms with the whole log, $after ms after compaction (ratio $(awk -v a="$after" -v b="$before" 'BEGIN {printf "%.3f", a/b}'))"
