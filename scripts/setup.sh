#!/usr/bin/env bash
# Installs what building, running and testing recordfs needs on a fresh Debian machine:
# fuse3 (fusermount3, to clear mounts as any user), protoc and etcd, and the tools the tests
# drive for real.
# Idempotent: installs only what is missing. Needs root (FUSE mounts need it too).
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  echo "setup: run as root (FUSE mounts and package installs need it)" >&2
  exit 1
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo is missing; install a Rust toolchain (rustup) first" >&2
  exit 1
fi
if [ ! -e /dev/fuse ]; then
  echo "setup: /dev/fuse is missing; load the fuse module (modprobe fuse)" >&2
  exit 1
fi

missing=()
command -v fusermount3 >/dev/null 2>&1 || missing+=(fuse3)
command -v vim >/dev/null 2>&1 || missing+=(vim)
command -v jq >/dev/null 2>&1 || missing+=(jq)
command -v nano >/dev/null 2>&1 || missing+=(nano)
command -v emacs >/dev/null 2>&1 || missing+=(emacs-nox)
command -v rsync >/dev/null 2>&1 || missing+=(rsync)
command -v inotifywait >/dev/null 2>&1 || missing+=(inotify-tools)
command -v perl >/dev/null 2>&1 || missing+=(perl)
command -v tar >/dev/null 2>&1 || missing+=(tar)
command -v git >/dev/null 2>&1 || missing+=(git)
command -v setfattr >/dev/null 2>&1 || missing+=(attr)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
command -v truncate >/dev/null 2>&1 || missing+=(coreutils)
command -v mount >/dev/null 2>&1 || missing+=(mount)
command -v setpriv >/dev/null 2>&1 || missing+=(util-linux)
command -v unshare >/dev/null 2>&1 || missing+=(util-linux)
command -v findmnt >/dev/null 2>&1 || missing+=(util-linux)
command -v mount.fuse3 >/dev/null 2>&1 || missing+=(fuse3)
command -v diff >/dev/null 2>&1 || missing+=(diffutils)
command -v mknod >/dev/null 2>&1 || missing+=(coreutils)
command -v script >/dev/null 2>&1 || missing+=(bsdutils)
command -v mkfs.ext4 >/dev/null 2>&1 || missing+=(e2fsprogs)
# Stores in etcd (issue 14): the client crate builds its protocol code with protoc; the tests
# start real etcd members and look at their keys with etcdctl.
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || missing+=(etcd-client)
# A cluster that takes only TLS clients: the tests make its CA and certificates.
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
for c in rustfmt clippy; do
  if ! cargo "${c/rustfmt/fmt}" --version >/dev/null 2>&1; then
    rustup component add "$c"
  fi
done
