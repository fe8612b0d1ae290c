#!/usr/bin/env bash
# `recordfs import` and `export` of RECORDS records (10,000 by default; issue 13's bound is
# 1 s for the import) on a fresh ext4 loop device, ROUNDS rounds, medians and raw figures:
# an import into a new store (not mounted), the export back (compared byte for byte with the
# input), and as the baseline in the same rounds a Python loop writing each record to its
# own file on the same ext4 (open, write, close; no fsync, no check).
#   scripts/bench-import.sh [RECORDS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
records=${1:-10000}
rounds=${2:-3}
. scripts/bench-lib.sh
now() { date +%s%N; }
secs() { python3 -c "print(($(now) - $1) / 1e9)"; }
python3 - "$disk/in.json" "$records" <<'PY'
import json, sys, uuid
path, n = sys.argv[1], int(sys.argv[2])
recs = {str(uuid.UUID(int=i * 7919 + 12345)): {"n": i, "name": "player %d" % i, "pad": "x" * 400} for i in range(n)}
with open(path, "w") as f:
    f.write("{\n" + ",\n".join("%s: %s" % (json.dumps(k), json.dumps(recs[k])) for k in sorted(recs)) + "\n}\n")
PY
imports="" exports="" plains=""
for r in $(seq "$rounds"); do
  sync
  t0=$(now)
  "$bin" import "$disk/store-$r" "$disk/in.json" 2>/dev/null >/dev/null
  imports+="$(secs "$t0") "
  t0=$(now)
  "$bin" export "$disk/store-$r" "$disk/out.json" 2>/dev/null >/dev/null
  exports+="$(secs "$t0") "
  cmp -s "$disk/in.json" "$disk/out.json" || { echo "bench-import: export differs from input" >&2; exit 1; }
  sync
  t0=$(now)
  python3 - "$disk/in.json" "$disk/plain-$r" <<'PY'
import json, os, sys
recs = json.load(open(sys.argv[1]))
os.mkdir(sys.argv[2])
for k, v in recs.items():
    with open(os.path.join(sys.argv[2], k + ".json"), "w") as f:
        f.write(json.dumps(v))
PY
  plains+="$(secs "$t0") "
done
echo "== $records records, $rounds rounds; raw: import $imports| export $exports| python loop $plains"
printf 'import %.2f s, export %.2f s, a Python loop writing the files on ext4 %.2f s (import/loop %.2f)\n' \
  "$(median <<<"$imports")" "$(median <<<"$exports")" "$(median <<<"$plains")" \
  "$(python3 -c "print($(median <<<"$imports") / $(median <<<"$plains"))")"
echo "RESULT import_secs $(median <<<"$imports")"
echo "RESULT export_secs $(median <<<"$exports")"
