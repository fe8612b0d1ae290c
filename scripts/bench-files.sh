#!/usr/bin/env bash
# Many small files without durability, on one fresh ext4 loop device: N records of 500 B made
# one after another by one process (open, write, close), then each opened, read and closed,
# each stat'ed, and the directory listed (warm caches) on recordfs (--sync never), on bindfs
# over a directory of the same ext4, on that ext4 directly, and on examples/nullfs.rs (the least
# a filesystem behind FUSE does for the same requests). Runs interleaved, medians,
# ratios against bindfs; `RESULT` lines for scripts/bench.sh. Installs bindfs if missing.
#   scripts/bench-files.sh [N] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-10000}
rounds=${2:-3}
command -v bindfs >/dev/null 2>&1 ||
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q bindfs >/dev/null
. scripts/bench-lib.sh
mkdir -p "$disk/ext4"
mount_with_bindfs --sync never
mount_nullfs

systems=(recordfs bindfs ext4 nullfs)
declare -A res
for r in $(seq "$rounds"); do
  for s in "${systems[@]}"; do
    case $s in
      recordfs) d=$mnt/r$r ;;
      bindfs) d=$bind/r$r ;;
      ext4) d=$disk/ext4/r$r ;;
      nullfs) d=$null/r$r ;;
    esac
    mkdir "$d"
    read -r c rd st ls < <(python3 scripts/bench_files.py "$d" "$n")
    res[$s-create]+="$c "
    res[$s-read]+="$rd "
    res[$s-stat]+="$st "
    res[$s-list]+="$ls "
  done
done
echo "== $n files of 500 B without durability, 1 process, $rounds rounds interleaved, medians, seconds (fresh ext4 on $loop)"
printf '%-22s %10s %10s %10s %10s   %s\n' "" recordfs bindfs ext4 nullfs "recordfs against bindfs"
for op in create read stat list; do
  m() { median <<<"${res[$1-$op]}"; }
  case $op in
    create) label="create (open, write, close)" ;;
    read) label="open, read, close" ;;
    stat) label="stat" ;;
    list) label="list the directory" ;;
  esac
  # Speed ratio for operations, time ratio for the listing (the issue's goal is a time).
  ratio=$(python3 -c "print('%.2f' % ($(m bindfs) / $(m recordfs)))")
  printf '%-22s %10s %10s %10s %10s   %sx as fast\n' "${label:0:22}" "$(m recordfs)" "$(m bindfs)" "$(m ext4)" "$(m nullfs)" "$ratio"
  echo "RESULT files_${op}_recordfs $(m recordfs)"
  echo "RESULT files_${op}_bindfs $(m bindfs)"
  echo "RESULT files_${op}_ext4 $(m ext4)"
  echo "RESULT files_${op}_nullfs $(m nullfs)"
done
echo "all runs:"
for k in "${!res[@]}"; do echo "  $k: ${res[$k]}"; done | sort
