#!/usr/bin/env bash
# Every benchmark issue 12 names, in one run, then its goals with what was measured. Each part
# makes its own fresh ext4 on a loop device (the same size and options each time), runs its
# systems interleaved and reports medians:
#   scripts/bench-peers.sh  durable saves per second, 1 and 8 writers, update and create:
#                           recordfs (--sync always) against the atomic pattern on ext4 and
#                           through bindfs, SQLite WAL synchronous=FULL, Redis appendfsync
#                           always, and one fdatasync of a 500 B append (the physical limit);
#                           and examples/nullfs.rs, the least a filesystem behind FUSE does
#                           (also with a file of its own written per file, as recordfs keeps);
#   scripts/bench-files.sh  10,000 files without durability: create, open+read+close, stat,
#                           listing, against bindfs and ext4;
#   scripts/bench-large.sh  a 50 MiB file with twenty 1 KiB appends, and SQLite's 200
#                           transactions: time against ext4 and bytes the daemon writes;
#   scripts/bench-mount.sh  a store of many records: mounts after a clean unmount and after
#                           SIGKILL, RSS, listing (100,000 records; --full: 1,000,000).
# Every part's output, with its raw runs, is printed as it comes.
#   scripts/bench.sh [--full]
set -euo pipefail
cd "$(dirname "$0")/.."
records=100000
[ "${1:-}" = --full ] && records=1000000
out=$(mktemp -d /tmp/recordfs-bench-all.XXXXXX)
trap 'rm -rf "$out"' EXIT
part() { # NAME SCRIPT ARGS...
  local name=$1
  shift
  echo "### $name: $*"
  bash "$@" | tee "$out/$name.txt"
  echo
}
part peers scripts/bench-peers.sh 3 3
part files scripts/bench-files.sh 10000 3
part large scripts/bench-large.sh 3
part many scripts/bench-mount.sh "$records" 1

cat "$out"/*.txt | grep '^RESULT ' | python3 -c '
import sys
r = {}
for line in sys.stdin:
    _, k, v = line.split()
    r[k] = float(v)
rows = []
# null: what examples/nullfs.rs reached on the same measure (where FUSE is in it): a goal it
# misses too is out of reach of any filesystem behind FUSE on this machine. For durable saves
# also with --backing (a file written per file, as the contract asks of recordfs): a goal that
# misses is out of reach of any filesystem behind FUSE that keeps a file per record.
def goal(what, value, ok, target, null="-"):
    rows.append((what, value, "met" if ok else "NOT met", target, null))
def ratio(a, b):
    return r[a] / max(r[b], 1e-9)
def nulls(kind, w, peer):
    n = ratio(f"peers_{kind}_{w}_nullfs", f"peers_{kind}_{w}_{peer}")
    b = ratio(f"peers_{kind}_{w}_nullback", f"peers_{kind}_{w}_{peer}")
    return f"{n:.2f}x, with backing files {b:.2f}x"
for kind, w in [("update", 1)]:
    for peer, what, bound in [("atomic", "the atomic pattern", 2), ("sqlite", "SQLite WAL FULL", 1)]:
        x = ratio(f"peers_{kind}_{w}_recordfs", f"peers_{kind}_{w}_{peer}")
        goal(f"durable {kind}, {w} writer, against {what}", f"{x:.2f}x", x >= bound, f">= {bound}x", nulls(kind, w, peer))
for kind in ["update", "create"]:
    for peer, what, bound in [("redis", "Redis AOF always", 1), ("atomic", "the atomic pattern", 2)]:
        x = ratio(f"peers_{kind}_8_recordfs", f"peers_{kind}_8_{peer}")
        goal(f"durable {kind}, 8 writers, against {what}", f"{x:.2f}x", x >= bound, f">= {bound}x", nulls(kind, 8, peer))
x = ratio("files_create_bindfs", "files_create_recordfs")
n = ratio("files_create_bindfs", "files_create_nullfs")
goal("10,000 creates without durability, against bindfs", f"{x:.2f}x as fast", x >= 3, ">= 3x", f"{n:.2f}x")
x = ratio("files_read_bindfs", "files_read_recordfs")
n = ratio("files_read_bindfs", "files_read_nullfs")
goal("10,000 open+read+close, against bindfs", f"{x:.2f}x as fast", x >= 2, ">= 2x", f"{n:.2f}x")
x = ratio("files_list_recordfs", "files_list_bindfs")
n = ratio("files_list_nullfs", "files_list_bindfs")
goal("listing 10,000 names, time against bindfs", f"{x:.2f}x the time", x <= 1, "<= 1x", f"{n:.2f}x")
x = r["files_create_recordfs"]
n = r["files_create_nullfs"]
goal("10,000 records created through the mount, --sync never", f"{x:.2f} s", x <= 2, "<= 2 s", f"{n:.2f} s")
x = r["large_bytes_recordfs"]
limit = 2 * r["large_file_size"] + (1 << 20)
goal("bytes written for a 50 MiB file of random bytes and twenty 1 KiB appends", f"{x / 2**20:.1f} MiB", x <= limit, f"<= {limit / 2**20:.0f} MiB")
x = r["large_text_bytes_recordfs"]
goal("the same with a text file", f"{x / 2**20:.1f} MiB", x <= limit, f"<= {limit / 2**20:.0f} MiB")
x = ratio("large_append_recordfs", "large_append_ext4")
goal("the twenty appends, time against ext4 (fsync each)", f"{x:.2f}x", x <= 5, "<= 5x")
x = ratio("sqlite_bytes_recordfs", "sqlite_bytes_ext4")
goal("SQLite, 200 transactions: bytes against SQLite on ext4", f"{x:.1f}x", x <= 5, "<= 5x")
x = ratio("sqlite_device_bytes_recordfs", "sqlite_device_bytes_ext4")
goal("the same, bytes the disk got (journal included)", f"{x:.1f}x", x <= 5, "<= 5x")
n = int(r["many_records"])
at = "" if n == 1000000 else f" (at {n:,} records; the goal is at 1,000,000)"
for key, what, lim, unit in [("many_clean_mount", "mount after a clean unmount", 2, "s"),
                              ("many_killed_mount", "mount after SIGKILL", 2, "s"),
                              ("many_list", "listing every name, cold", 2, "s"),
                              ("many_rss_mib", "daemon RSS once mounted", 200, "MiB")]:
    x = r[key]
    goal(what + at, f"{x:.2f} {unit}", x <= lim, f"<= {lim} {unit}")
w = max(len(a) for a, *_ in rows)
print("== goals of issue 12, as measured in this run (last column: examples/nullfs.rs on the same measure)")
for what, value, ok, target, null in rows:
    print(f"{what:<{w}}  {value:>16}  {target:>10}  {ok:<7}  {null}")
'
