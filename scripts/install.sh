#!/usr/bin/env bash
# Installs recordfs where a system looks for each part:
#   PREFIX/bin/recordfs                                   the binary (cargo build --release)
#   PREFIX/share/man/man1/recordfs*.1                     man pages (recordfs manpages)
#   PREFIX/share/bash-completion/completions/recordfs     bash completion
#   PREFIX/share/zsh/site-functions/_recordfs             zsh completion
#   PREFIX/share/fish/vendor_completions.d/recordfs.fish  fish completion
# and Debian's fuse3 if missing (mount.fuse3, which `mount -t fuse.recordfs` and fstab lines
# use, and fusermount3, through which users other than root mount). No mount helper link is
# needed: mount.fuse3 runs `recordfs STORE MOUNTPOINT -o OPTIONS` itself, and mount(8) finds
# recordfs on its own PATH, which holds /usr/local/bin but not ~/.local/bin.
#
#   scripts/install.sh                               as root: into /usr/local
#   PREFIX=$HOME/.local scripts/install.sh           for one user (no fstab use)
#   DESTDIR=/tmp/pkg scripts/install.sh              staged, for packaging
#   RECORDFS_BIN=path/to/recordfs scripts/install.sh    a binary already built
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=${PREFIX:-/usr/local}
dest=${DESTDIR:-}

if [ -z "$dest" ] && [ "$(id -u)" -eq 0 ] && ! command -v mount.fuse3 >/dev/null 2>&1; then
  echo "install: installing fuse3"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q fuse3 >/dev/null
fi
bin=${RECORDFS_BIN:-}
if [ -z "$bin" ]; then
  # The etcd client's build generates its protocol code with protoc.
  if ! command -v protoc >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then
      echo "install: protoc is missing (Debian: protobuf-compiler); install it, or run as root" >&2
      exit 1
    fi
    echo "install: installing protobuf-compiler"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q protobuf-compiler >/dev/null
  fi
  cargo build --release -q
  bin=target/release/recordfs
fi

install -D -m 0755 "$bin" "$dest$prefix/bin/recordfs"
installed=$dest$prefix/bin/recordfs
"$installed" manpages "$dest$prefix/share/man/man1" >/dev/null
chmod 0644 "$dest$prefix"/share/man/man1/recordfs*.1
completion() { # shell file
  install -d "$(dirname "$2")"
  "$installed" completions "$1" >"$2"
  chmod 0644 "$2"
}
completion bash "$dest$prefix/share/bash-completion/completions/recordfs"
completion zsh "$dest$prefix/share/zsh/site-functions/_recordfs"
completion fish "$dest$prefix/share/fish/vendor_completions.d/recordfs.fish"
echo "installed $("$installed" --version) in $dest$prefix (binary, man pages, bash/zsh/fish completions)"
