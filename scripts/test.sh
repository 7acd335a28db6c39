#!/usr/bin/env bash
# Runs every test of the project: unit tests and the integration tests against the real daemon
# binary, real processes, real PTYs and the real Kubernetes CRD API server. Installs what it
# needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

# python3: test programs (OOM, health checks); util-linux: `unshare` for the PID 1 test;
# procps: `ps` in PTY tests; lua5.1: the Argo CD health checks (tests/argocd_health.rs).
apt_install python3 util-linux procps lua5.1
rust_tools

log "building"
cargo build --all-targets --locked

# The CRD and operator tests need the local control plane. Its first start builds the API
# server from Debian packages (minutes); do it here, not inside a test with a time limit.
started_cp=""
if ! bash scripts/control-plane.sh status >/dev/null 2>&1; then
    log "starting the local control plane"
    bash scripts/control-plane.sh start || die "the local control plane did not start (see above)"
    started_cp=1
fi
cleanup() { if [ -n "$started_cp" ]; then bash scripts/control-plane.sh stop >/dev/null 2>&1 || true; fi; }
trap cleanup EXIT

log "running the tests"
cargo nextest run --lib --bins --tests --locked --no-fail-fast "$@"
