#!/usr/bin/env bash
# Listing one big directory, measured on a fresh ext4 loop device: a store with ENTRIES files in
# one directory (made through the mount with --sync never), then per round a fresh mount and
# three `ls -f | wc -l` of the directory; prints the median of each listing and, with
# BASE_BIN=/path/to/recordfs, the same for that binary in the same rounds, interleaved, and
# the ratio base/this.
#   scripts/bench-readdir.sh [ENTRIES] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
entries=${1:-100000}
rounds=${2:-3}
. scripts/bench-lib.sh

"$bin" mount "$disk/store" "$mnt" --sync never >/dev/null
mkdir "$mnt/big"
python3 - "$mnt/big" "$entries" <<'EOF'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    os.close(os.open(f"{d}/f{i:07d}", os.O_CREAT | os.O_WRONLY, 0o644))
EOF
umount "$mnt"
stopped "$disk/store"
: > "$disk/store/daemon.log"

declare -A first warm
builds=(this)
[ -n "${BASE_BIN:-}" ] && builds+=(base)
binary() { if [ "$1" = base ]; then echo "$BASE_BIN"; else echo "$bin"; fi; }
for _ in $(seq "$rounds"); do
  for v in "${builds[@]}"; do
    "$(binary "$v")" mount "$disk/store" "$mnt" >/dev/null
    for i in 1 2 3; do
      t0=$(date +%s%N)
      n=$(ls -f "$mnt/big" | wc -l)
      t=$(python3 -c "print(($(date +%s%N) - $t0) / 1e9)")
      [ "$n" -eq $((entries + 2)) ] || { echo "bench-readdir: listed $n names" >&2; exit 1; }
      if [ "$i" = 1 ]; then first[$v]+="$t "; else warm[$v]+="$t "; fi
    done
    umount "$mnt"
    stopped "$disk/store"
    : > "$disk/store/daemon.log"
  done
done
echo "== listing a directory of $entries entries ($rounds rounds, interleaved; seconds, median)"
for v in "${builds[@]}"; do
  printf '%-5s first %.3f  warm %.3f\n' "$v" "$(median <<<"${first[$v]}")" "$(median <<<"${warm[$v]}")"
done
if [ -n "${BASE_BIN:-}" ]; then
  printf 'ratio base/this: first %.2f  warm %.2f\n' \
    "$(python3 -c "print($(median <<<"${first[base]}") / $(median <<<"${first[this]}"))")" \
    "$(python3 -c "print($(median <<<"${warm[base]}") / $(median <<<"${warm[this]}"))")"
fi
