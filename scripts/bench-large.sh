#!/usr/bin/env bash
# Large files on a fresh ext4 loop device: what a small change to a big file costs.
#  - a 50 MiB file, then twenty 1 KiB appends (open, write, close; on ext4 also an fsync each,
#    so both sides are durable at each append's return under --sync always): the appends' time
#    and all the bytes the daemon wrote (its write_bytes, from the mount until a second after
#    the last append, when everything is applied), against the file's size; for a file of
#    random bytes (which the log holds in base64) and for a text file (held as it is);
#  - a SQLite database of about 0.5 MB (rollback journal, synchronous=FULL) and 200
#    transactions of one update: the bytes the daemon wrote against what SQLite itself writes
#    on ext4; and what reached the loop device in each case (from a sync before to a sync
#    after: the blocks the disk got, the filesystem's journal included).
# Medians of ROUNDS; with BASE_BIN=/path/to/recordfs the same for that build in the same
# rounds, interleaved.
#   scripts/bench-large.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
LOOP_SIZE=${LOOP_SIZE:-2G}
. scripts/bench-lib.sh
now() { date +%s%N; }
secs() { python3 -c "print(($2 - $1) / 1e9)"; }
head -c $((50 << 20)) /dev/urandom > "$disk/src.bin"
# The same size as text (which the log holds as it is, where it holds bytes in base64).
python3 -c 'import base64, sys
text = base64.encodebytes(open(sys.argv[1], "rb").read(38 << 20))[: 50 << 20]
open(sys.argv[2], "wb").write(text)' "$disk/src.bin" "$disk/src.txt"

appends() { # DIR FSYNC(0|1): twenty 1 KiB appends to DIR/big.bin
  python3 - "$1/big.bin" "$2" <<'PY'
import os, sys
p, sync = sys.argv[1], sys.argv[2] == "1"
for i in range(20):
    fd = os.open(p, os.O_WRONLY | os.O_APPEND)
    os.write(fd, os.urandom(1024))
    if sync:
        os.fsync(fd)
    os.close(fd)
PY
}
sqlite_work() { # DIR: a ~0.5 MB database, then 200 one-update transactions
  python3 - "$1/db.sqlite" <<'PY'
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("pragma synchronous=full")
c.execute("create table t (id integer primary key, v text)")
c.execute("begin")
for i in range(1000):
    c.execute("insert into t values (?, ?)", (i, "x" * 400))
c.execute("commit")
for i in range(200):
    c.execute("begin")
    c.execute("update t set v = ? where id = ?", ("y" * 400, (i * 37) % 1000))
    c.execute("commit")
c.close()
print(int(open("/proc/self/io").read().split("write_bytes: ")[1].split()[0]))
PY
}
write_bytes() { awk '/^write_bytes/ {print $2}' "/proc/$1/io" 2>/dev/null || true; }
# The bytes written to the loop device so far (sectors written, field 7 of its stat).
device_bytes() { awk '{printf "%.0f\n", $7 * 512}' "/sys/block/$(basename "$loop")/stat"; }
# The daemon's write_bytes once it has applied everything (entries wait 20 ms to be applied;
# the unmount that follows adds a checkpoint line and syncs), then unmounts.
settled_bytes() { # PID
  sleep 1
  write_bytes "$1"
  umount "$mnt"
}

run_recordfs() { # BIN -> "append_secs daemon_bytes_big daemon_bytes_text sqlite_daemon_bytes sqlite_device_bytes"
  local b=$1 store=$disk/store.$RANDOM pid t0 t1 big text sql dev0 dev
  "$b" mount "$store" "$mnt" >/dev/null
  pid=$(pgrep -f -x "$b mount $store $mnt.*" | head -1)
  cp "$disk/src.bin" "$mnt/big.bin"
  t0=$(now); appends "$mnt" 0; t1=$(now)
  big=$(settled_bytes "$pid"); stopped "$store"
  rm -rf "$store"
  "$b" mount "$store" "$mnt" >/dev/null
  pid=$(pgrep -f -x "$b mount $store $mnt.*" | head -1)
  cp "$disk/src.txt" "$mnt/big.bin"
  appends "$mnt" 0
  text=$(settled_bytes "$pid"); stopped "$store"
  sync; dev0=$(device_bytes)
  "$b" mount "$store" "$mnt" >/dev/null
  pid=$(pgrep -f -x "$b mount $store $mnt.*" | head -1)
  sqlite_work "$mnt" >/dev/null
  sleep 1; sync; dev=$(($(device_bytes) - dev0))
  sql=$(settled_bytes "$pid"); stopped "$store"
  rm -rf "$store"
  echo "$(secs "$t0" "$t1") $big $text $sql $dev"
}
run_ext4() { # -> "append_secs sqlite_bytes sqlite_device_bytes"
  local d=$disk/plain t0 t1 sql dev0
  mkdir -p "$d"; cp "$disk/src.bin" "$d/big.bin"; sync
  t0=$(now); appends "$d" 1; t1=$(now)
  sync; dev0=$(device_bytes)
  sql=$(sqlite_work "$d")
  sleep 1; sync
  echo "$(secs "$t0" "$t1") $sql $(($(device_bytes) - dev0))"
  rm -rf "$d"
}

ext_t=(); ext_sql=(); ext_dev=(); this_t=(); this_big=(); this_text=(); this_sql=(); this_dev=()
base_t=(); base_big=(); base_text=(); base_sql=(); base_dev=()
for r in $(seq "$rounds"); do
  read -r t q v < <(run_ext4); ext_t+=("$t"); ext_sql+=("$q"); ext_dev+=("$v")
  read -r t b x q v < <(run_recordfs "$bin")
  this_t+=("$t"); this_big+=("$b"); this_text+=("$x"); this_sql+=("$q"); this_dev+=("$v")
  if [ -n "${BASE_BIN:-}" ]; then
    read -r t b x q v < <(run_recordfs "$BASE_BIN")
    base_t+=("$t"); base_big+=("$b"); base_text+=("$x"); base_sql+=("$q"); base_dev+=("$v")
  fi
  echo "round $r done" >&2
done
m() { echo "$@" | median; }
size=$((50 << 20))
echo "twenty 1 KiB appends to a 50 MiB file (--sync always; ext4 with an fsync each):"
echo "  ext4 $(m "${ext_t[@]}") s; this build $(m "${this_t[@]}") s ($(python3 -c "print(round($(m "${this_t[@]}")/$(m "${ext_t[@]}"),2))")x ext4), daemon wrote $(m "${this_big[@]}") B = $(python3 -c "print(round($(m "${this_big[@]}")/$size,2))") x the file"
echo "  the same with a text file: daemon wrote $(m "${this_text[@]}") B = $(python3 -c "print(round($(m "${this_text[@]}")/$size,2))") x the file"
echo "SQLite, 200 transactions on a ~0.5 MB database:"
echo "  SQLite wrote $(m "${ext_sql[@]}") B on ext4; this build's daemon $(m "${this_sql[@]}") B ($(python3 -c "print(round($(m "${this_sql[@]}")/$(m "${ext_sql[@]}"),1))")x)"
echo "  on the device: SQLite on ext4 $(m "${ext_dev[@]}") B; through this build $(m "${this_dev[@]}") B ($(python3 -c "print(round($(m "${this_dev[@]}")/$(m "${ext_dev[@]}"),1))")x)"
echo "  raw, per round: SQLite ${ext_sql[*]} / device ${ext_dev[*]}; daemon ${this_sql[*]} / device ${this_dev[*]}"
echo "RESULT large_append_ext4 $(m "${ext_t[@]}")"
echo "RESULT large_append_recordfs $(m "${this_t[@]}")"
echo "RESULT large_bytes_recordfs $(m "${this_big[@]}")"
echo "RESULT large_text_bytes_recordfs $(m "${this_text[@]}")"
echo "RESULT large_file_size $size"
echo "RESULT sqlite_bytes_ext4 $(m "${ext_sql[@]}")"
echo "RESULT sqlite_bytes_recordfs $(m "${this_sql[@]}")"
echo "RESULT sqlite_device_bytes_ext4 $(m "${ext_dev[@]}")"
echo "RESULT sqlite_device_bytes_recordfs $(m "${this_dev[@]}")"
if [ -n "${BASE_BIN:-}" ]; then
  echo "BASE_BIN: appends $(m "${base_t[@]}") s, daemon wrote $(m "${base_big[@]}") B = $(python3 -c "print(round($(m "${base_big[@]}")/$size,2))") x the file (text: $(m "${base_text[@]}") B); SQLite: daemon $(m "${base_sql[@]}") B ($(python3 -c "print(round($(m "${base_sql[@]}")/$(m "${ext_sql[@]}"),1))")x), on the device $(m "${base_dev[@]}") B ($(python3 -c "print(round($(m "${base_dev[@]}")/$(m "${ext_dev[@]}"),1))")x)"
  echo "  raw, per round: daemon ${base_sql[*]} / device ${base_dev[*]}"
fi
