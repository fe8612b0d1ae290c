# Sourced by the benchmarks that compare this build with BASE_BIN on a fresh ext4 loop device:
# the machine set up, this build ($bin, or THIS_BIN), the loop device ($disk, $mnt), and
# helpers. The caller has cd'ed to the repository.
scripts/setup.sh >/dev/null
bin=${THIS_BIN:-}
if [ -z "$bin" ]; then
  cargo build --release -q
  bin=$PWD/target/release/recordfs
fi
. scripts/loopdisk.sh
# The median of the numbers on stdin (separated by spaces or lines).
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# Waits (bounded) for the daemon of store $1 to say it unmounted.
stopped() {
  for _ in $(seq 600); do
    grep -q "unmounted cleanly\|not cleanly" "$1/daemon.log" 2>/dev/null && return 0
    sleep 0.05
  done
  echo "$(basename "$0"): the daemon did not stop" >&2
  exit 1
}
# A bindfs mount of $disk/bind-src at $bind beside the recordfs mount at $mnt (mounted with
# ARGS); both are unmounted on exit, after BEFORE_CLEANUP (a command, if set), before the
# loop device goes.
bind=$work/bind
mount_with_bindfs() { # ARGS...
  mkdir -p "$disk/bind-src" "$bind"
  trap 'set +e; eval "${BEFORE_CLEANUP:-}"; for m in "$bind" "$null" "$mnt"; do grep -q " $m " /proc/self/mounts && umount "$m"; done; cleanup' EXIT
  "$bin" mount "$disk/store" "$mnt" "$@" >/dev/null
  bindfs "$disk/bind-src" "$bind"
}
# The null FUSE filesystem (examples/nullfs.rs: the least any filesystem behind FUSE does for
# the same requests) at $null, with ARGS (--sync FILE: one shared fdatasync per flush), beside
# the mounts of mount_with_bindfs (call that first: its exit trap unmounts this too). Built
# here unless NULL_BIN names it.
null=$work/null
mount_nullfs() { # ARGS...
  nullbin=${NULL_BIN:-}
  if [ -z "$nullbin" ]; then
    cargo build --release -q --example nullfs
    nullbin=$PWD/target/release/examples/nullfs
  fi
  mkdir -p "$null"
  "$nullbin" "$null" "$@" 2>"$work/nullfs.log" &
  for _ in $(seq 200); do
    grep -q " $null " /proc/self/mounts && return 0
    sleep 0.05
  done
  echo "$(basename "$0"): nullfs did not mount: $(cat "$work/nullfs.log")" >&2
  exit 1
}
