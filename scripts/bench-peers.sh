#!/usr/bin/env bash
# Durable saves per second, recordfs against its peers, on one fresh ext4 loop device, runs
# interleaved, medians, ratios. Every save is durable when it returns:
#   recordfs   open(O_TRUNC) + write 500 B + close of a <uuid>.json, --sync always
#   atomic     temp file + write + fsync + rename + directory fsync, on the ext4 directly
#   bindfs     the atomic pattern through a bindfs mount of a directory of that ext4
#   sqlite     one INSERT OR REPLACE transaction per save, WAL, synchronous=FULL
#   redis      SET of 500 B with appendonly yes, appendfsync always (redis-benchmark, as many
#              clients as writers)
#   nullfs     recordfs's saves on examples/nullfs.rs --sync: what any filesystem behind FUSE
#              reaches here, answering from memory with one shared fdatasync per save
#   nullback   the same with --backing: each synced file then written to a file of its own
#              on the same ext4, as recordfs's backing files are: what any filesystem behind
#              FUSE that keeps a file per record reaches here
# for new records (create) and rewrites of existing ones (update), 1 and 8 writers; and the
# physical limit: fdatasync of a 500 B append, one writer. Installs redis and bindfs if missing.
#   scripts/bench-peers.sh [SECONDS_PER_RUN] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-3}
rounds=${2:-3}
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-benchmark >/dev/null 2>&1 || need+=(redis-tools)
command -v bindfs >/dev/null 2>&1 || need+=(bindfs)
command -v sqlite3 >/dev/null 2>&1 || need+=(sqlite3)
if [ "${#need[@]}" -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null
fi
. scripts/bench-lib.sh
sock=$work/redis.sock
mkdir -p "$disk/redis"
nullback=$work/nullback
BEFORE_CLEANUP='[ -f "$work/redis.pid" ] && kill "$(cat "$work/redis.pid")" 2>/dev/null;
  grep -q " $nullback " /proc/self/mounts && umount "$nullback"'
mount_with_bindfs --sync always
mount_nullfs --sync "$disk/null.log"
mkdir -p "$nullback" "$disk/nullback"
"$nullbin" "$nullback" --sync "$disk/nullback.log" --backing "$disk/nullback" \
  2>"$work/nullback.log" &
for _ in $(seq 200); do grep -q " $nullback " /proc/self/mounts && break; sleep 0.05; done
grep -q " $nullback " /proc/self/mounts || { echo "nullfs --backing did not mount" >&2; exit 1; }
redis-server --port 0 --unixsocket "$sock" --dir "$disk/redis" --appendonly yes \
  --appendfsync always --save "" --daemonize yes --pidfile "$work/redis.pid" \
  --logfile "$work/redis.log" >/dev/null
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done

# One run; prints saves per second.
run() { # system kind writers round
  local sys=$1 kind=$2 w=$3 dir
  case $sys in
    recordfs) dir=$mnt/$kind-$w-$4 ;;
    nullfs) dir=$null/$kind-$w-$4 ;;
    nullback) dir=$nullback/$kind-$w-$4 ;;
    atomic | sqlite) dir=$disk/$sys-$kind-$w-$4 ;;
    bindfs) dir=$bind/$kind-$w-$4 ;;
    redis)
      # Keys drawn from a small space rewrite records; from a huge one, make new ones. The
      # count is sized to run about SECONDS at the rate seen in the first run.
      local space=$([ "$kind" = update ] && echo $((100 * w)) || echo 1000000000)
      local n=${redis_n[$kind$w]:-$((secs * 500))}
      local rate
      rate=$(redis-benchmark -s "$sock" -t set -d 500 -c "$w" -n "$n" -r "$space" -q 2>/dev/null |
        tr '\r' '\n' | grep -o 'SET: [0-9.]*' | tail -1 | awk '{print int($2)}')
      redis_n[$kind$w]=$((rate * secs > 100 ? rate * secs : 100))
      echo "$rate"
      return
      ;;
  esac
  mkdir -p "$dir"
  local mode=$sys
  case $sys in recordfs | nullfs | nullback) mode=mount ;; esac
  [ "$sys" = bindfs ] && mode=atomic
  python3 scripts/bench_load.py "$mode" "$dir" "$w" "$secs" "$kind"
}
limit() {
  python3 - "$disk/limit" "$secs" <<'EOF'
import os, sys, time
fd = os.open(sys.argv[1], os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o644)
n, end = 0, time.monotonic() + float(sys.argv[2])
start = time.monotonic()
while time.monotonic() < end:
    os.write(fd, b"x" * 500)
    os.fdatasync(fd)
    n += 1
print(f"{n / (time.monotonic() - start):.0f}")
EOF
}

systems=(recordfs atomic bindfs sqlite redis nullfs nullback)
declare -A res redis_n
for r in $(seq "$rounds"); do
  for kind in update create; do
    for w in 1 8; do
      for s in "${systems[@]}"; do
        res[$s-$kind-$w]+="$(run "$s" "$kind" "$w" "$r") "
      done
    done
  done
  res[limit]+="$(limit) "
done

echo "== durable saves per second, 500 B, $secs s runs, $rounds rounds interleaved, medians (fresh ext4 on $loop)"
printf '%-7s %-3s' save w
for s in "${systems[@]}"; do printf ' %9s' "$s"; done
printf '   recordfs against each\n'
for kind in update create; do
  for w in 1 8; do
    printf '%-7s %-3s' "$kind" "$w"
    for s in "${systems[@]}"; do printf ' %9s' "$(median <<<"${res[$s-$kind-$w]}")"; done
    printf '  '
    for s in "${systems[@]:1}"; do
      printf ' %s %.2f' "$s" "$(python3 -c "print($(median <<<"${res[recordfs-$kind-$w]}") / max(1, $(median <<<"${res[$s-$kind-$w]}")))")"
    done
    echo
  done
done
echo "physical limit (fdatasync of a 500 B append, 1 writer): $(median <<<"${res[limit]}")/s"
for kind in update create; do
  for w in 1 8; do
    for s in "${systems[@]}"; do
      echo "RESULT peers_${kind}_${w}_$s $(median <<<"${res[$s-$kind-$w]}")"
    done
  done
done
echo "RESULT peers_limit $(median <<<"${res[limit]}")"
echo "all runs:"
for k in "${!res[@]}"; do echo "  $k: ${res[$k]}"; done | sort
