#!/usr/bin/env bash
# Builds recordfs, mounts a demo store with a few records, and shows it working: an edit, a
# refused bad save, and a SIGKILL survived. Leaves the demo mounted and says how to unmount.
#   scripts/demo.sh            (as root; RECORDFS_DEMO_DIR picks the place, default /tmp/recordfs-demo)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
echo "== building"
cargo build --release -q
bin=$PWD/target/release/recordfs
demo=${RECORDFS_DEMO_DIR:-/tmp/recordfs-demo}
store=$demo/store
mnt=$demo/mnt
if grep -q " $mnt " /proc/self/mounts; then umount "$mnt" 2>/dev/null || umount -l "$mnt"; fi
rm -rf "$demo"
mkdir -p "$mnt"
step() { printf '\n== %s\n' "$*"; }
show() { printf '$ %s\n' "$*"; eval "$@"; }

step "mount a new store"
show "$bin mount $store $mnt"

step "records are <uuid>.json files; any program writes them with plain file I/O"
alice=6f1c2b7e-1d2a-4c3b-9f00-000000000001.json
bob=6f1c2b7e-1d2a-4c3b-9f00-000000000002.json
show "printf '{\"name\": \"alice\", \"visits\": 1}\n' > $mnt/$alice"
show "python3 -c 'import json; json.dump({\"name\": \"bob\", \"tags\": [\"new\"]}, open(\"$mnt/$bob\", \"w\"))'"
show "echo 'plain files are not checked' > $mnt/notes.txt"
show "ls -l $mnt"
show "jq -c . $mnt/$alice"

step "edit a record in place (sed -i writes a temp file and renames it over the record)"
show "sed -i 's/\"visits\": 1/\"visits\": 2/' $mnt/$alice"
show "cat $mnt/$alice"

step "a bad save is refused with EINVAL; the previous version is kept, and so are the bytes"
show "python3 -c 'with open(\"$mnt/$alice\", \"w\") as f: f.write(\"{\\\"name\\\": oops\")' 2>&1 | tail -1 || true"
show "cat $mnt/$alice"
show "ls $store/rejected/"

step "the daemon is killed with SIGKILL right after a commit; the next mount has everything"
show "printf '{\"name\": \"carol\"}\n' > $mnt/6f1c2b7e-1d2a-4c3b-9f00-000000000003.json"
pid=$(awk '{print $3}' "$store/lock")
show "kill -9 $pid"
for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
show "umount -l $mnt    # a killed FUSE daemon leaves a dead mount behind"
show "$bin mount $store $mnt"
show "ls $mnt"
show "cat $mnt/6f1c2b7e-1d2a-4c3b-9f00-000000000003.json"

step "every commit is a checksummed JSON line in the store's log: a record's history, and the store's figures"
show "$bin log $store --name $alice | jq -c '{seq, op, name, data}'"
show "$bin stats $store"

step "the store is its owner's alone: its log holds every version of every file, whatever the file's mode"
show "ls -ld $store $store/log $store/log/*.log"

printf '\nThe demo store is mounted at %s (store: %s).\nUnmount it with: umount %s\n' "$mnt" "$store" "$mnt"
