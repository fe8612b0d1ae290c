#!/usr/bin/env bash
# A store of many records, measured on a fresh ext4 loop device: RECORDS records of 300 B in
# one directory, made through the mount with --sync never by 8 writers (the creation rate is
# printed), then per round and per build a mount with cold caches after a clean unmount, a
# mount after the daemon was killed with SIGKILL (a few saves logged since the last
# checkpoint), the daemon's RSS once mounted and again after the listing once any compaction
# it started has ended (idle), and a cold `ls -f` of the directory. Medians;
# with BASE_BIN=/path/to/recordfs the same for that binary in the same rounds, interleaved,
# and the ratios base/this. The store is made by this build: BASE_BIN must read its store
# version (FORMAT.md, "Versions"); across a version bump, run each build on a store of its own.
#   scripts/bench-mount.sh [RECORDS] [ROUNDS]      (the issue's figure: 1000000)
set -euo pipefail
cd "$(dirname "$0")/.."
records=${1:-100000}
rounds=${2:-3}
LOOP_SIZE=${LOOP_SIZE:-$((2 + records / 50000))G}
. scripts/bench-lib.sh
store=$disk/store

cold() { sync; echo 3 >/proc/sys/vm/drop_caches; }
now() { date +%s%N; }
secs() { python3 -c "print(($(now) - $1) / 1e9)"; }
daemon_pid() { pgrep -f -x "$1 mount $store $mnt.*" | head -1; }

t0=$(now)
"$bin" mount "$store" "$mnt" --sync never >/dev/null
mkdir "$mnt/records"
python3 - "$mnt/records" "$records" <<'EOF'
import os, sys, uuid, threading
d, n = sys.argv[1], int(sys.argv[2])
def writer(w):
    for i in range(w, n, 8):
        u = uuid.UUID(int=(i << 64) | 0x4000_8000_0000_0000)
        with open(f"{d}/{u}.json", "w") as f:
            f.write('{"n": %d, "pad": "%s"}' % (i, "x" * 270))
ts = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
[t.start() for t in ts]
[t.join() for t in ts]
EOF
made=$(secs "$t0")
umount "$mnt"
stopped "$store"
printf '== %d records made through the mount (--sync never, 8 writers) in %.1f s: %.0f/s\n' \
  "$records" "$made" "$(python3 -c "print($records / $made)")"
echo "RESULT many_records $records"
echo "RESULT many_create_rate $(python3 -c "print(round($records / $made))")"

declare -A clean killed rss idle list
# Waits (at most 300 s) until every compaction the daemon logged starting has ended: a mount
# whose log tail is long starts one, which holds a copy of the namespace while it runs.
compactions_done() {
  local started ended
  for _ in $(seq 3000); do
    started=$(grep -c "compacting the log" "$store/daemon.log" || true)
    ended=$(grep -c -e "compacted the log" -e "compaction failed" "$store/daemon.log" || true)
    [ "$started" -le "$ended" ] && return 0
    sleep 0.1
  done
  echo "bench-mount: a compaction did not end within 300 s" >&2
  return 1
}
builds=(this)
[ -n "${BASE_BIN:-}" ] && builds+=(base)
binary() { if [ "$1" = base ]; then echo "$BASE_BIN"; else echo "$bin"; fi; }
for _ in $(seq "$rounds"); do
  for v in "${builds[@]}"; do
    b=$(binary "$v")
    : >"$store/daemon.log"
    cold
    t0=$(now)
    "$b" mount "$store" "$mnt" >/dev/null
    clean[$v]+="$(secs "$t0") "
    pid=$(daemon_pid "$b")
    rss[$v]+="$(awk '/VmRSS/ {print $2 / 1024}' "/proc/$pid/status") "
    cold
    t0=$(now)
    n=$(ls -f "$mnt/records" | wc -l)
    list[$v]+="$(secs "$t0") "
    [ "$n" -eq $((records + 2)) ] || { echo "bench-mount: listed $n names" >&2; exit 1; }
    compactions_done
    idle[$v]+="$(awk '/VmRSS/ {print $2 / 1024}' "/proc/$pid/status") "
    # A few saves after the last checkpoint, then the daemon dies without a word.
    for i in 1 2 3; do echo "{\"killed\": $i}" >"$mnt/records/00000000-0000-4000-8000-00000000000$i.json"; done
    kill -9 "$pid"
    umount -l "$mnt"
    cold
    t0=$(now)
    "$b" mount "$store" "$mnt" >/dev/null
    killed[$v]+="$(secs "$t0") "
    [ "$(cat "$mnt/records/00000000-0000-4000-8000-000000000003.json")" = '{"killed": 3}' ]
    rm "$mnt"/records/00000000-0000-4000-8000-00000000000?.json
    umount "$mnt"
    stopped "$store"
  done
done
echo "== raw figures, one per round: clean mount, after kill, RSS, idle RSS, cold ls -f"
for v in "${builds[@]}"; do
  echo "$v: ${clean[$v]}| ${killed[$v]}| ${rss[$v]}| ${idle[$v]}| ${list[$v]}"
done
echo "== $records records, $rounds rounds (interleaved), medians"
printf '%-5s %12s %12s %10s %10s %12s\n' build "clean mount" "after kill" "RSS MiB" "idle MiB" \
  "cold ls -f"
for v in "${builds[@]}"; do
  printf '%-5s %11.2fs %11.2fs %10.0f %10.0f %11.2fs\n' "$v" "$(median <<<"${clean[$v]}")" \
    "$(median <<<"${killed[$v]}")" "$(median <<<"${rss[$v]}")" "$(median <<<"${idle[$v]}")" \
    "$(median <<<"${list[$v]}")"
done
echo "RESULT many_clean_mount $(median <<<"${clean[this]}")"
echo "RESULT many_killed_mount $(median <<<"${killed[this]}")"
echo "RESULT many_rss_mib $(median <<<"${rss[this]}")"
echo "RESULT many_rss_idle_mib $(median <<<"${idle[this]}")"
echo "RESULT many_list $(median <<<"${list[this]}")"
if [ -n "${BASE_BIN:-}" ]; then
  r() { python3 -c "print('%.2f' % ($(median <<<"$1") / $(median <<<"$2")))"; }
  echo "ratio base/this: clean mount $(r "${clean[base]}" "${clean[this]}")," \
    "after kill $(r "${killed[base]}" "${killed[this]}")," \
    "RSS $(r "${rss[base]}" "${rss[this]}"), idle RSS $(r "${idle[base]}" "${idle[this]}"), ls -f $(r "${list[base]}" "${list[this]}")"
fi
