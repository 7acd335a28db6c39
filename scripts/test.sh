#!/usr/bin/env bash
# Runs every test of the project: unit tests and the integration tests against the real daemon
# binary, real processes and real PTYs. Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

# python3: test programs (OOM, health checks); util-linux: `unshare` for the PID 1 test;
# procps: `ps` in PTY tests.
apt_install python3 util-linux procps
rust_tools

log "building"
cargo build --all-targets --locked
log "running the tests"
cargo nextest run --lib --bins --tests --locked --no-fail-fast "$@"
log "running doc tests"
cargo test --doc --locked
