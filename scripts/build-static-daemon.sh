#!/usr/bin/env bash
# Builds a statically linked sandbox-daemon (the binary docker/daemon.Dockerfile ships, so it
# runs in any sandbox image: glibc, musl or none) and checks that it is static.
#   scripts/build-static-daemon.sh [OUT]     default OUT: target/static/sandbox-daemon
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

out=${1:-target/static/sandbox-daemon}
target="$(uname -m)-unknown-linux-gnu"
apt_install file
command -v cargo >/dev/null || die "cargo is not installed: install Rust 1.85+ (https://rustup.rs)"

log "cargo build --release --bin sandbox-daemon --target $target (crt-static)"
# --target keeps RUSTFLAGS off build scripts and proc macros, which must stay dynamic host
# programs; a target dir of its own keeps the static objects apart from the normal build's.
RUSTFLAGS='-C target-feature=+crt-static' CARGO_TARGET_DIR=target/static \
    cargo build --release --locked --bin sandbox-daemon --target "$target"
bin="target/static/$target/release/sandbox-daemon"

desc=$(file -b "$bin")
case "$desc" in
    *"statically linked"* | *"static-pie linked"*) ;;
    *) die "$bin is not static: $desc" ;;
esac
# ldd prints "statically linked" (exit 0) for a static-pie binary, "not a dynamic executable"
# (exit 1) for a plain static one, and `lib => path` lines for a dynamic one.
if ldd "$bin" 2>&1 | grep -q '=>'; then
    die "ldd lists shared libraries for $bin: $(ldd "$bin" 2>&1)"
fi
"$bin" --version >/dev/null || die "$bin does not run"

mkdir -p "$(dirname "$out")"
cp "$bin" "$out"
log "static sandbox-daemon: $out ($desc)"
