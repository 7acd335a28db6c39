#!/usr/bin/env bash
# Fuzzes the daemon's HTTP API from its own OpenAPI document with schemathesis (PyPI): no 5xx,
# every status, content type and body as documented. The daemon runs with its files routes
# confined to a temporary directory, so fuzzed file writes and deletes stay inside it.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

venv=$(py_tool_venv "schemathesis>=4,<5")
cargo build --locked --bin sandbox-daemon
work=$(mktemp -d)
trap 'kill "${daemon_pid:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/files"
head -c 32 /dev/urandom | base64 > "$work/token"
./target/debug/sandbox-daemon --listen 127.0.0.1:0 --token-file "$work/token" \
    --files-root "$work/files" --state-dir "$work/state" >"$work/daemon.out" 2>"$work/daemon.err" &
daemon_pid=$!
for _ in $(seq 100); do
    grep -q "listening on" "$work/daemon.out" 2>/dev/null && break
    sleep 0.1
done
addr=$(sed -n 's/^sandbox-daemon listening on //p' "$work/daemon.out")
[ -n "$addr" ] || { cat "$work/daemon.err" >&2; die "the daemon did not start"; }

log "schemathesis against http://$addr/openapi.json"
# Streams that only end when a process or session does (follow, events, WebSocket attach) are
# left out: the integration tests cover them.
"$venv/bin/schemathesis" run "http://$addr/openapi.json" \
    --header "Authorization: Bearer $(cat "$work/token")" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
    --exclude-path-regex '/follow$|/events$|/ws$' \
    --max-examples "${FUZZ_EXAMPLES:-40}" --request-timeout 15 --seed "${FUZZ_SEED:-$RANDOM}" --no-color \
    || { tail -20 "$work/daemon.err" >&2; die "schemathesis found API contract violations (see above)"; }
kill -0 "$daemon_pid" 2>/dev/null || die "the daemon died during fuzzing"
if grep -q "panicked" "$work/daemon.err"; then
    grep -A5 panicked "$work/daemon.err" >&2
    die "the daemon panicked during fuzzing"
fi
log "fuzzing passed"
