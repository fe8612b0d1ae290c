#!/usr/bin/env bash
# The whole test suite, as CI runs it: format, lints, unit tests, and the integration tests
# that mount real recordfs filesystems (root and /dev/fuse needed; scripts/setup.sh checks).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy"
cargo clippy --all-targets --all-features -- -D warnings
echo "== cargo test"
cargo test --all-targets --features failpoints,sim 2>&1
# recordfs mounts, and the differential test's reference tmpfs.
if grep -qE '^(recordfs:|recordfs-diff )' /proc/self/mounts; then
  echo "test.sh: a mount was left behind:" >&2
  grep -E '^(recordfs:|recordfs-diff )' /proc/self/mounts >&2
  exit 1
fi
# etcd members the tests started (tests/common/cluster.rs kills each cluster when its test
# ends).
if pgrep -f 'initial-cluster-token recordfs-test' >/dev/null; then
  echo "test.sh: etcd members were left running:" >&2
  pgrep -af 'initial-cluster-token recordfs-test' >&2
  exit 1
fi
# Network namespaces and links of the partition test (tests/common/cluster.rs, `Net`).
if ip netns list | grep -q '^rfs' || ip -o link | grep -q ': rfs'; then
  echo "test.sh: network namespaces or links were left behind:" >&2
  ip netns list | grep '^rfs' >&2 || true
  ip -o link | grep ': rfs' >&2 || true
  exit 1
fi
