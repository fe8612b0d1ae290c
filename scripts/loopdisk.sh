# Sourced by the benchmarks: a fresh ext4 on a loop device at $disk, removed on exit with the
# mount at $mnt (the machine's / has no journal and slows after mass deletes; see FUSE-NOTES).
work=$(mktemp -d /tmp/recordfs-bench.XXXXXX)
disk=$work/disk
mnt=$work/mnt
loop=""
cleanup() {
  set +e
  if grep -q " $mnt " /proc/self/mounts; then umount "$mnt" 2>/dev/null || umount -l "$mnt"; fi
  if grep -q " $disk " /proc/self/mounts; then umount "$disk" 2>/dev/null || umount -l "$disk"; fi
  [ -n "$loop" ] && losetup -d "$loop"
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$disk" "$mnt"
# 8 GiB (sparse): at 2 GiB the peers' 8-writer create runs (scripts/bench.sh) failed with
# ENOSPC on a day the systems made files fast enough.
truncate -s "${LOOP_SIZE:-8G}" "$work/disk.img"
mkfs.ext4 -q -F "$work/disk.img"
loop=$(losetup -f --show "$work/disk.img")
mount "$loop" "$disk"
