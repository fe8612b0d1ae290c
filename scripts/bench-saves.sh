#!/usr/bin/env bash
# Log syncs per save and saves per second, by how programs save, on a fresh ext4 loop device:
# create + write + close of new records, open(O_TRUNC) + write + close of existing ones,
# json.dump to a temp file + os.replace, and sed -i; under --sync always and --sync never.
# Each round mounts a fresh store per build, runs SAVES saves of each kind, unmounts, and reads
# the daemon's own count of log syncs. With BASE_BIN=/path/to/recordfs the same runs for that
# binary, interleaved, and the ratios.
#   [KINDS="create update replace sed"] [MODES="always never"] scripts/bench-saves.sh [SAVES] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
saves=${1:-300}
rounds=${2:-3}
. scripts/bench-lib.sh
# One kind of save, SAVES times, in directory $1; prints the seconds it took.
run() {
  python3 - "$1" "$2" "$saves" <<'EOF'
import json, os, subprocess, sys, tempfile, time
d, kind, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
rec = lambda i: f"{d}/{i:08x}-0000-4000-8000-000000000000.json"
body = lambda i, v: json.dumps({"id": i, "v": v, "pad": "x" * 460})
t0 = time.monotonic()
for i in range(n):
    if kind in ("create", "update"):
        with open(rec(i), "w") as f:
            f.write(body(i, 1))
    elif kind == "replace":
        fd, tmp = tempfile.mkstemp(dir=d, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump({"id": i, "v": 1, "pad": "x" * 460}, f)
        os.replace(tmp, rec(i))
    elif kind == "sed":
        subprocess.run(["sed", "-i", 's/"v": 0/"v": 1/', rec(i)], check=True)
print(time.monotonic() - t0)
EOF
}

read -ra kinds <<<"${KINDS:-create update replace sed}"
read -ra modes <<<"${MODES:-always never}"
declare -A secs syncs
builds=(this)
[ -n "${BASE_BIN:-}" ] && builds+=(base)
binary() { if [ "$1" = base ]; then echo "$BASE_BIN"; else echo "$bin"; fi; }
for r in $(seq "$rounds"); do
  for mode in "${modes[@]}"; do
    for kind in "${kinds[@]}"; do
      for v in "${builds[@]}"; do
        store=$disk/s-$r-$mode-$kind-$v
        "$(binary "$v")" mount "$store" "$mnt" --sync "$mode" >/dev/null
        before=0
        if [ "$kind" != create ]; then
          # The records a save updates are made first; their syncs are not counted.
          python3 - "$mnt" "$saves" <<'EOF'
import json, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    with open(f"{d}/{i:08x}-0000-4000-8000-000000000000.json", "w") as f:
        f.write(json.dumps({"id": i, "v": 0, "pad": "x" * 460}))
EOF
          umount "$mnt"; stopped "$store"
          before=$(grep -o 'stats: [0-9]* commits, [0-9]* log syncs' "$store/daemon.log" | awk '{s += $4} END {print s + 0}')
          "$(binary "$v")" mount "$store" "$mnt" --sync "$mode" >/dev/null
        fi
        t=$(run "$mnt" "$kind" | tail -1)
        umount "$mnt"; stopped "$store"
        total=$(grep -o 'stats: [0-9]* commits, [0-9]* log syncs' "$store/daemon.log" | awk '{s += $4} END {print s + 0}')
        secs[$mode-$kind-$v]+="$t "
        syncs[$mode-$kind-$v]+="$(python3 -c "print(($total - $before) / $saves)") "
      done
    done
  done
done
echo "== $saves saves of each kind, $rounds rounds, interleaved; medians (syncs per save counts the whole run, unmount included)"
printf '%-7s %-8s %-5s %10s %12s\n' mode save build saves/s syncs/save
for mode in "${modes[@]}"; do
  for kind in "${kinds[@]}"; do
    for v in "${builds[@]}"; do
      s=$(median <<<"${secs[$mode-$kind-$v]}")
      printf '%-7s %-8s %-5s %10.0f %12.2f\n' "$mode" "$kind" "$v" \
        "$(python3 -c "print($saves / $s)")" "$(median <<<"${syncs[$mode-$kind-$v]}")"
    done
    if [ -n "${BASE_BIN:-}" ]; then
      printf '%-7s %-8s ratio this/base: saves/s %.2f, syncs/save %.2f\n' "$mode" "$kind" \
        "$(python3 -c "print($(median <<<"${secs[$mode-$kind-base]}") / $(median <<<"${secs[$mode-$kind-this]}"))")" \
        "$(python3 -c "b = $(median <<<"${syncs[$mode-$kind-base]}"); print($(median <<<"${syncs[$mode-$kind-this]}") / b if b else float('nan'))")"
    fi
  done
done
