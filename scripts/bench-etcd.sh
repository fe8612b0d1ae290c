#!/usr/bin/env bash
# A store in etcd against a store directory, on one fresh ext4 loop device: a three-member
# etcd cluster on loopback (its data directories on the loop device) and a store directory
# beside it. Per round, interleaved: `recordfs import` of N records of about 450 B into each
# (a new prefix holding an empty store, a new store directory), `recordfs export` of them, and `recordfs migrate` of the store
# directory into a new prefix. The two exports must be the same bytes. Then durable saves
# (bench_load.py, 500 B records rewritten, SECS each) with 1 and 8 writers through a mount of
# a store directory, through a mount of a prefix (`recordfs mount etcd://...`), and as plain
# etcd puts through its HTTP gateway (etcd's own cost); and the time from a save's close on
# one mount of a prefix to the version showing on a read-only mount of it (bench_visible.py,
# 200 saves a round). Then two mounts that both change one prefix: saves with 1 and 4
# writers on each at once (each writer its own records), and the time from a save on one to
# its version showing on the other. Medians of ROUNDS, with every raw figure.
#   scripts/bench-etcd.sh [N] [ROUNDS] [SECS]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-10000}
rounds=${2:-3}
secs=${3:-3}
. scripts/bench-lib.sh
members=()
trap 'set +e; for m in "$work"/follower "$work"/two-*; do grep -q " $m " /proc/self/mounts && umount "$m"; done; for p in "${members[@]}"; do kill -9 "$p"; done; cleanup' EXIT
port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
clients=()
peers=()
for i in 0 1 2; do
  clients+=("127.0.0.1:$(port)")
  peers+=("127.0.0.1:$(port)")
done
initial=""
for i in 0 1 2; do initial+="${initial:+,}m$i=http://${peers[$i]}"; done
for i in 0 1 2; do
  etcd --name "m$i" --data-dir "$disk/etcd$i" \
    --listen-client-urls "http://${clients[$i]}" --advertise-client-urls "http://${clients[$i]}" \
    --listen-peer-urls "http://${peers[$i]}" --initial-advertise-peer-urls "http://${peers[$i]}" \
    --initial-cluster "$initial" --initial-cluster-state new \
    --initial-cluster-token recordfs-bench >"$work/etcd$i.log" 2>&1 &
  members+=($!)
done
endpoints=$(IFS=,; echo "${clients[*]}")
ctl() { ETCDCTL_API=3 etcdctl --endpoints "$endpoints" "$@"; }
for _ in $(seq 300); do ctl endpoint health >/dev/null 2>&1 && break; sleep 0.1; done
ctl endpoint health >/dev/null

python3 - "$work/records.jsonl" "$n" <<'PY'
import json, sys, uuid
with open(sys.argv[1], "w") as f:
    for i in range(int(sys.argv[2])):
        rec = {"id": str(uuid.UUID(int=(i << 64) | 0x4000_8000_0000_0000)), "n": i,
               "name": "player %d" % i, "pad": "x" * 380}
        f.write(json.dumps(rec) + "\n")
PY
now() { date +%s%N; }
secs() { python3 -c "print(round(($2 - $1) / 1e9, 3))"; }
timed() { local t0; t0=$(now); "$@" >/dev/null; secs "$t0" "$(now)"; }

# An empty store, made by a mount, to start each prefix imported into.
"$bin" mount "$disk/empty" "$mnt" >/dev/null
umount "$mnt"
stopped "$disk/empty"
declare -A res
for r in $(seq "$rounds"); do
  mkdir -p "$disk/src$r"
  "$bin" migrate "$disk/empty" "etcd://$endpoints/imp$r" >/dev/null
  res[import-dir]+="$(timed "$bin" import "$disk/src$r/store" "$work/records.jsonl") "
  res[import-etcd]+="$(timed "$bin" import "etcd://$endpoints/imp$r" "$work/records.jsonl") "
  res[export-dir]+="$(timed "$bin" export "$disk/src$r/store" "$work/out-dir$r.jsonl") "
  res[export-etcd]+="$(timed "$bin" export "etcd://$endpoints/imp$r" "$work/out-etcd$r.jsonl") "
  cmp -s "$work/out-dir$r.jsonl" "$work/out-etcd$r.jsonl" || {
    echo "bench-etcd: the exports from the directory and from etcd differ" >&2
    exit 1
  }
  res[migrate]+="$(timed "$bin" migrate "$disk/src$r/store" "etcd://$endpoints/mig$r") "
  for w in 1 8; do
    "$bin" mount "$disk/saves$r" "$mnt" >/dev/null
    res[saves-dir-$w]+="$(python3 scripts/bench_load.py mount "$mnt" "$w" "$secs" update) "
    umount "$mnt"
    stopped "$disk/saves$r"
    "$bin" mount "etcd://$endpoints/saves$r-$w" "$mnt" >/dev/null
    res[saves-etcd-$w]+="$(python3 scripts/bench_load.py mount "$mnt" "$w" "$secs" update) "
    umount "$mnt"
    for _ in $(seq 200); do grep -q " $mnt " /proc/self/mounts || break; sleep 0.05; done
    res[saves-puts-$w]+="$(python3 scripts/bench_load.py etcd "${clients[0]}" "$w" "$secs" update) "
  done
  mkdir -p "$work/follower"
  "$bin" mount "etcd://$endpoints/saves$r-1" "$mnt" >/dev/null
  "$bin" mount --read-only "etcd://$endpoints/saves$r-1" "$work/follower" >/dev/null
  read -r p50 p99 _ <<<"$(python3 scripts/bench_visible.py "$mnt" "$work/follower" 200)"
  res[visible-p50]+="$p50 "
  res[visible-p99]+="$p99 "
  umount "$work/follower"
  umount "$mnt"
  for _ in $(seq 200); do grep -q " $mnt " /proc/self/mounts || break; sleep 0.05; done
  # Two mounts changing one prefix, each pair at mount points of its own (so that no
  # daemon still ending shares a mount point with a new one).
  for w in 1 4 visible; do
    one="$work/two-$r-$w-a" two="$work/two-$r-$w-b"
    mkdir -p "$one" "$two"
    "$bin" mount "etcd://$endpoints/two$r-$w" "$one" >/dev/null
    "$bin" mount "etcd://$endpoints/two$r-$w" "$two" >/dev/null
    if [ "$w" = visible ]; then
      read -r p50 p99 _ <<<"$(python3 scripts/bench_visible.py "$one" "$two" 200)"
      res[across-p50]+="$p50 "
      res[across-p99]+="$p99 "
    else
      python3 scripts/bench_load.py mount "$one" "$w" "$secs" update >"$work/two-a" &
      first=$!
      python3 scripts/bench_load.py mount "$two" "$w" "$secs" update >"$work/two-b"
      wait "$first"
      res[saves-two-$w]+="$(python3 -c "print(round($(cat "$work/two-a") + $(cat "$work/two-b")))") "
    fi
    umount "$two"
    umount "$one"
  done
  echo "round $r done" >&2
done
echo "== $n records of about 450 B, $rounds rounds interleaved, medians, seconds (3 etcd members on loopback, fresh ext4 on $loop)"
for k in import-dir import-etcd export-dir export-etcd migrate; do
  printf '%-12s %8s   raw: %s\n' "$k" "$(median <<<"${res[$k]}")" "${res[$k]}"
done
ratio() { python3 -c "print(round($(median <<<"${res[$1]}") / $(median <<<"${res[$2]}"), 2))"; }
echo "etcd against the directory: import $(ratio import-etcd import-dir)x the time, export $(ratio export-etcd export-dir)x"
echo "== durable saves per second of 500 B records, $secs s each, $rounds rounds interleaved, medians"
for k in saves-dir-1 saves-etcd-1 saves-puts-1 saves-dir-8 saves-etcd-8 saves-puts-8; do
  printf '%-14s %8s   raw: %s\n' "$k" "$(median <<<"${res[$k]}")" "${res[$k]}"
done
for w in 1 8; do
  echo "$w writer(s): a mount of etcd makes $(ratio saves-etcd-$w saves-dir-$w)x the saves of a mount of a directory, $(ratio saves-etcd-$w saves-puts-$w)x etcd's plain puts"
done
echo "== a save on one mount to its version on a read-only mount of the prefix, ms (200 saves a round)"
for k in visible-p50 visible-p99; do
  printf '%-14s %8s   raw: %s\n' "$k" "$(median <<<"${res[$k]}")" "${res[$k]}"
done
echo "== two mounts changing one prefix: saves per second of both together (W writers on each), and a save on one to its version on the other, ms"
for k in saves-two-1 saves-two-4 across-p50 across-p99; do
  printf '%-14s %8s   raw: %s\n' "$k" "$(median <<<"${res[$k]}")" "${res[$k]}"
done
echo "two mounts, 1 writer each: $(ratio saves-two-1 saves-etcd-1)x one mount's 1 writer; 4 each: $(ratio saves-two-4 saves-etcd-8)x one mount's 8 writers"
