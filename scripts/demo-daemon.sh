#!/usr/bin/env bash
# A tour of the daemon API alone: builds sandbox-daemon, starts it with a token, and drives it
# over its HTTP API with curl, showing each answer. Cleans up after itself. (The end-to-end demo
# with the control plane and the operator is scripts/demo.sh.)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

apt_install curl python3
command -v cargo >/dev/null || die "cargo is not installed: install Rust 1.85+ (https://rustup.rs)"
log "building sandbox-daemon"
cargo build --release --locked --bin sandbox-daemon

work=$(mktemp -d)
trap 'kill "${daemon_pid:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
head -c 24 /dev/urandom | base64 > "$work/token"
./target/release/sandbox-daemon --listen 127.0.0.1:0 --token-file "$work/token" \
    --state-dir "$work/state" --files-root "$work/files" >"$work/out" 2>"$work/log" &
daemon_pid=$!
for _ in $(seq 100); do grep -q "listening on" "$work/out" 2>/dev/null && break; sleep 0.1; done
addr=$(sed -n 's/^sandbox-daemon listening on //p' "$work/out")
[ -n "$addr" ] || { cat "$work/log" >&2; die "the daemon did not start"; }
base="http://$addr/api/v1"
auth=(-H "Authorization: Bearer $(cat "$work/token")")

show() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
pretty() { python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin), indent=2))'; }

show "GET /health (no token needed)"
curl -fsS "$base/health"; echo
show "GET /info"
curl -fsS "${auth[@]}" "$base/info" | pretty

show "POST /processes: a web server, managed by name, with a health check"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
curl -fsS "${auth[@]}" -X POST "$base/processes" -H 'Idempotency-Key: demo-web' -d @- <<JSON | pretty
{"command":"python3","args":["-m","http.server","$port","--bind","127.0.0.1"],"name":"web",
 "labels":{"app":"demo"},"restart":{"policy":"on_failure","max_restarts":3},
 "health_check":{"type":"http","port":$port,"path":"/","initial_delay_ms":300,"interval_ms":200}}
JSON
sleep 1
show "GET /processes/web (by name): health turns healthy"
curl -fsS "${auth[@]}" "$base/processes/web" | python3 -c 'import json,sys; p=json.load(sys.stdin); print({k: p[k] for k in ("pid","status")}, p["managed"]["health_status"])'

show "POST /processes/run: a one-shot job streaming its output (SSE)"
curl -fsS -N "${auth[@]}" -X POST "$base/processes/run" -d '{"command":"sh","args":["-c","echo building; sleep 0.2; echo done >&2; exit 3"]}'

show "POST /processes with stdin piped; write to it; follow its output"
pid=$(curl -fsS "${auth[@]}" -X POST "$base/processes" -d '{"command":"cat","stdin_mode":"pipe"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])')
curl -fsS "${auth[@]}" -X POST "$base/processes/$pid/stdin" --data-binary $'hello from stdin\n'
curl -fsS "${auth[@]}" -X POST "$base/processes/$pid/stdin/close"
curl -fsS -N "${auth[@]}" "$base/processes/$pid/output/follow"

show "POST /processes/web/signal SIGTERM: death by signal is a failure, so on_failure restarts it"
curl -fsS "${auth[@]}" -X POST "$base/processes/web/signal" -d '{"signal":"SIGTERM"}'; echo
sleep 0.2
curl -fsS "${auth[@]}" "$base/processes/web" | python3 -c 'import json,sys; p=json.load(sys.stdin); print({k: p.get(k) for k in ("pid","status","signal","exit_reason")}, p["managed"]["status"], "restarts:", p["managed"]["restart_count"])'
sleep 0.8
curl -fsS "${auth[@]}" "$base/processes/web" | python3 -c 'import json,sys; p=json.load(sys.stdin); print({k: p.get(k) for k in ("pid","status","signal","exit_reason")}, p["managed"]["status"], "restarts:", p["managed"]["restart_count"])'

show "GET /processes?label=app=demo"
curl -fsS "${auth[@]}" "$base/processes?label=app=demo" | python3 -c 'import json,sys; [print(p["pid"], p["status"], p["command"], p["args"]) for p in json.load(sys.stdin)["processes"]]'

show "A request without the token"
curl -sS "$base/processes"; echo

show "DELETE /processes/web (stop signal, 500 ms grace, SIGKILL)"
curl -fsS "${auth[@]}" -X DELETE "$base/processes/web?grace_ms=500" -o /dev/null -w '%{http_code}\n'
log "demo finished; the daemon is stopped and its temp dir removed"
