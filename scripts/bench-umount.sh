#!/usr/bin/env bash
# umount-to-exit: how long the daemon needs after `umount` returns (its final checkpoint),
# and whether `recordfs mount` run at once succeeds, after writing N records of 500 B under
# --sync never on a fresh loop-device ext4. With BASE_BIN set, that binary runs too, rounds
# interleaved, and the ratio is reported.
#   scripts/bench-umount.sh [N] [ROUNDS]   (BASE_BIN=/path/to/recordfs to compare; LOOP_SIZE=8G for big N)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-20000}
rounds=${2:-3}
scripts/setup.sh
cargo build --release -q
bin=$PWD/target/release/recordfs
. scripts/loopdisk.sh
echo "disk: fresh ext4 on $loop; $n records per run, $rounds rounds"

# One run: prints "SECONDS_TO_EXIT REMOUNT_OK".
run() {
  local b=$1 store=$disk/store.$RANDOM
  "$b" mount "$store" "$mnt" --sync never >/dev/null
  python3 - "$mnt" "$n" <<'PY'
import os, sys
mnt, n = sys.argv[1], int(sys.argv[2])
body = b'{"k": "' + b'x' * 490 + b'"}'
for i in range(n):
    with open(os.path.join(mnt, '%08x-0000-4000-8000-000000000000.json' % i), 'wb') as f:
        f.write(body)
PY
  local pid
  pid=$(awk '{print $3}' "$store/lock")
  local t0 t1 ok=yes
  t0=$(date +%s.%N)
  umount "$mnt"
  "$b" mount "$store" "$mnt" --sync never >"$work/remount.out" 2>&1 &
  local again=$!
  while [ -e "/proc/$pid" ] && ! grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null; do sleep 0.005; done
  t1=$(date +%s.%N)
  wait "$again" || { ok=no; echo "remount: $(head -c 300 "$work/remount.out")" >&2; }
  if grep -q " $mnt " /proc/self/mounts; then umount "$mnt"; fi
  local pid2
  pid2=$(awk '{print $3}' "$store/lock" 2>/dev/null || echo 0)
  for _ in $(seq 2000); do [ -e "/proc/$pid2" ] && ! grep -q '^State:.*Z' "/proc/$pid2/status" 2>/dev/null || break; sleep 0.01; done
  rm -rf "$store"
  echo "$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", b-a}') $ok"
}

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
new="" base="" newok="" baseok=""
for _ in $(seq "$rounds"); do
  if [ -n "${BASE_BIN:-}" ]; then read -r s ok < <(run "$BASE_BIN"); base+="$s "; baseok+="$ok "; fi
  read -r s ok < <(run "$bin"); new+="$s "; newok+="$ok "
done
printf '\n%-52s %10s\n' "seconds from umount to the old daemon's exit (median)" "$(echo "$new" | median)"
echo "this build: $new| immediate remount succeeded: $newok"
if [ -n "${BASE_BIN:-}" ]; then
  b=$(echo "$base" | median) m=$(echo "$new" | median)
  echo "base build: $base| immediate remount succeeded: $baseok"
  echo "ratio this/base: $(awk -v m="$m" -v b="$b" 'BEGIN {printf "%.3f", m/b}')"
fi
