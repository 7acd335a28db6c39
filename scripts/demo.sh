#!/usr/bin/env bash
# The demo, end to end on this machine: the local control plane (etcd + the real
# apiextensions-apiserver), a local sandbox-daemon, and the operator. It applies the
# SandboxProcess and PtySession examples from examples/, retargeted at the local daemon, and
# shows their status changing: a one-shot job going Pending -> Running -> Succeeded, a web
# server Running, a PTY session Active, an inspect-only object mirroring a process it did not
# start, a stop through `state: Stopped`, and deletions whose finalizers kill what they
# started. Then it cleans everything up.
#
# The local API server has no core API, so kubectl cannot talk to it (its discovery needs
# /api); the demo uses curl with the same requests `kubectl apply --server-side`, `kubectl get`
# and `kubectl delete` send.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

NS=demo
apt_install curl python3 procps
rust_tools

log "building sandbox-daemon and sandbox-operator"
cargo build --locked --bin sandbox-daemon --bin sandbox-operator
bin=target/debug

started_cp=""
if ! bash scripts/control-plane.sh status >/dev/null 2>&1; then
    log "starting the local control plane (the first start builds the API server: ~5 min)"
    bash scripts/control-plane.sh start || die "the local control plane did not start (see above)"
    started_cp=1
fi
eval "$(bash scripts/control-plane.sh env)"

work=$(mktemp -d)
cleanup() {
    set +e
    if [ -n "${operator_pid:-}" ]; then
        log "cleaning up: deleting the demo objects (the operator's finalizers stop their processes)"
        for kind in sandboxprocesses ptysessions; do
            kube DELETE "$(path "$kind")" >/dev/null 2>&1
        done
        for _ in $(seq 100); do
            left=$(count sandboxprocesses)$(count ptysessions)
            [ "$left" = "00" ] && break
            sleep 0.1
        done
        kill "$operator_pid" 2>/dev/null
    fi
    [ -n "${daemon_pid:-}" ] && kill "$daemon_pid" 2>/dev/null
    wait 2>/dev/null
    if [ -n "$started_cp" ]; then bash scripts/control-plane.sh stop >/dev/null 2>&1; fi
    rm -rf "$work"
}
trap cleanup EXIT

# One request to the API server, as kubectl would send it.
kube() {
    local method=$1 url=$2
    shift 2
    curl -fsS --cacert "$SANDBOX_CP_CA" --cert "$SANDBOX_CP_CLIENT_CERT" \
        --key "$SANDBOX_CP_CLIENT_KEY" -X "$method" "$SANDBOX_CP_SERVER$url" "$@"
}
path() { echo "/apis/sandboxes.dev/v1alpha1/namespaces/$NS/$1${2:+/$2}"; }
count() {
    kube GET "$(path "$1")" 2>/dev/null | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["items"]))' 2>/dev/null || echo 0
}

# `kubectl apply --server-side -f FILE` for one object (YAML goes as is).
apply() {
    local file=$1 plural=$2 name
    name=$(sed -n 's/^  name: //p' "$file" | head -1)
    kube PATCH "$(path "$plural" "$name")?fieldManager=demo&force=true" \
        -H 'Content-Type: application/apply-patch+yaml' --data-binary @"$file" >/dev/null
    echo "applied $plural/$name"
}

# `kubectl get KIND`: the API server renders the table from the CRD's printer columns.
get() {
    printf '\n\033[1m$ kubectl get %s -n %s\033[0m\n' "$1" "$NS"
    kube GET "$(path "$1")" -H 'Accept: application/json;as=Table;v=v1;g=meta.k8s.io' |
        python3 -c '
import json, sys
t = json.load(sys.stdin)
cols = [c["name"].upper() for c in t["columnDefinitions"] if c.get("priority", 0) == 0]
idx = [i for i, c in enumerate(t["columnDefinitions"]) if c.get("priority", 0) == 0]
rows = [["" if r["cells"][i] is None else str(r["cells"][i]) for i in idx] for r in t["rows"]]
w = [max(len(x) for x in col) for col in zip(cols, *rows)]
for line in [cols] + rows:
    print("   ".join(x.ljust(n) for x, n in zip(line, w)).rstrip())
if not rows:
    print("No resources found.")'
}

field() { # field PLURAL NAME PYTHON-EXPR-ON-status
    kube GET "$(path "$1" "$2")" | python3 -c "import json,sys; s=json.load(sys.stdin).get('status') or {}; print($3)"
}

# `kubectl get -w` for one object: prints each phase it goes through until it is finished.
watch_phases() { # watch_phases PLURAL NAME
    python3 - "$SANDBOX_CP_SERVER$(path "$1")?watch=1&timeoutSeconds=60&fieldSelector=metadata.name%3D$2" \
        "$SANDBOX_CP_CA" "$SANDBOX_CP_CLIENT_CERT" "$SANDBOX_CP_CLIENT_KEY" <<'PY'
import json, subprocess, sys, time
url, ca, cert, key = sys.argv[1:]
curl = subprocess.Popen(["curl", "-fsSN", "--cacert", ca, "--cert", cert, "--key", key, url],
                        stdout=subprocess.PIPE, text=True)
start, last = time.monotonic(), object()
for line in curl.stdout:
    obj = json.loads(line)["object"]
    phase = (obj.get("status") or {}).get("phase")
    if phase != last:
        last = phase
        shown = phase or "Pending (no status yet)"
        print(f"  +{(time.monotonic() - start) * 1000:6.0f} ms  {obj['metadata']['name']}: {shown}", flush=True)
    if phase in ("Succeeded", "Failed", "Stopped", "Lost", "Exited", "Expired"):
        break
curl.kill()
PY
}

wait_phase() { # wait_phase PLURAL NAME PHASE
    local phase=""
    for _ in $(seq 300); do
        phase=$(field "$1" "$2" "s.get('phase','')" 2>/dev/null || true)
        [ "$phase" = "$3" ] && { echo "$1/$2 is $3"; return 0; }
        sleep 0.1
    done
    die "$1/$2 did not become $3 within 30 s (it is '${phase:-no phase}')"
}

# The examples target a sandbox Pod or Service; here the daemon is local, so each object's
# `sandbox:` block becomes an endpoint. Everything else is applied exactly as written in
# examples/. Writes one file per object into $work and prints their paths.
retarget() {
    python3 - "$1" "$work" "$daemon" <<'PY'
import re, sys
src, outdir, url = sys.argv[1:]
for doc in re.split(r"(?m)^---\n", open(src).read()):
    if "\nkind:" not in "\n" + doc:
        continue
    out, n = re.subn(r"(?m)^  sandbox:\n(    .*\n)+", f"  sandbox:\n    endpoint: {url}\n", doc)
    if n != 1:
        sys.exit(f"{src}: expected one spec.sandbox block per object, found {n}")
    name = re.search(r"(?m)^  name: (\S+)", out).group(1)
    path = f"{outdir}/{name}.yaml"
    open(path, "w").write(out)
    print(path)
PY
}

log "starting sandbox-daemon"
head -c 24 /dev/urandom | base64 >"$work/token"
"$bin/sandbox-daemon" --listen 127.0.0.1:0 --token-file "$work/token" --state-dir "$work/state" \
    >"$work/daemon.out" 2>"$work/daemon.log" &
daemon_pid=$!
for _ in $(seq 100); do grep -q "listening on" "$work/daemon.out" 2>/dev/null && break; sleep 0.1; done
addr=$(sed -n 's/^sandbox-daemon listening on //p' "$work/daemon.out")
[ -n "$addr" ] || { cat "$work/daemon.log" >&2; die "the daemon did not start"; }
daemon="http://$addr"
echo "daemon at $daemon"

log "installing the CRDs (kubectl apply --server-side -f crds/)"
for f in crds/*.yaml; do
    name=$(sed -n 's/^  name: //p' "$f" | head -1)
    kube PATCH "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/$name?fieldManager=demo&force=true" \
        -H 'Content-Type: application/apply-patch+yaml' --data-binary @"$f" >/dev/null
    echo "applied crd/$name"
done
for plural in sandboxprocesses ptysessions; do
    for _ in $(seq 100); do kube GET "$(path "$plural")" >/dev/null 2>&1 && break; sleep 0.1; done
    kube GET "$(path "$plural")" >/dev/null || die "the $plural CRD is not served"
done

log "starting sandbox-operator (namespace $NS, daemon token from a file)"
"$bin/sandbox-operator" run --kubeconfig "$KUBECONFIG" --namespace "$NS" \
    --daemon-token-file "$work/token" --metrics-addr 127.0.0.1:0 2>"$work/operator.log" &
operator_pid=$!

log "a process the sandbox started itself, for the inspect-only example to adopt"
curl -fsS -H "Authorization: Bearer $(cat "$work/token")" -X POST "$daemon/api/v1/processes" \
    -d '{"command":"sleep","args":["600"],"name":"agent"}' >/dev/null
echo "daemon process 'agent' started"

job=$(sed -n 's/^  name: //p' examples/process-job.yaml | head -1)
log "the one-shot job: watching it go Pending -> Running -> Succeeded (kubectl get -w)"
watch_phases sandboxprocesses "$job" >"$work/job-phases" &
watcher=$!
sleep 0.5
for f in $(retarget examples/process-job.yaml); do apply "$f" sandboxprocesses; done
wait "$watcher" || die "watching $job failed"
cat "$work/job-phases"
grep -q "$job: Succeeded" "$work/job-phases" || die "$job did not succeed"

log "applying the other examples, retargeted at $daemon"
for ex in process-web process-stopped process-attach; do
    for f in $(retarget "examples/$ex.yaml"); do apply "$f" sandboxprocesses; done
done
for f in $(retarget examples/ptysession.yaml); do apply "$f" ptysessions; done
get sandboxprocesses
get ptysessions

log "waiting for the server to run and the sessions to be Active"
web=$(sed -n 's/^  name: //p' examples/process-web.yaml | head -1)
pty=$(sed -n 's/^  name: //p' examples/ptysession.yaml | head -1)
wait_phase sandboxprocesses "$web" Running
wait_phase ptysessions "$pty" Active
echo "$job output tail: $(field sandboxprocesses "$job" "' | '.join(s.get('outputTail', []))")"
get sandboxprocesses
get ptysessions
echo "session $(field ptysessions "$pty" "s.get('sessionId')"), shell pid $(field ptysessions "$pty" "s.get('pid')"), size $(field ptysessions "$pty" "s.get('size')")"
echo "TokenStored: $(field ptysessions "$pty" "[c['reason'] + ': ' + c['message'] for c in s.get('conditions', []) if c['type'] == 'TokenStored'][0]")"

log "resizing the session: spec.rows/cols 50x160"
kube PATCH "$(path ptysessions "$pty")" -H 'Content-Type: application/merge-patch+json' \
    -d '{"spec":{"rows":50,"cols":160}}' >/dev/null
for _ in $(seq 100); do [ "$(field ptysessions "$pty" "s.get('size')")" = "160x50" ] && break; sleep 0.1; done
echo "observed size: $(field ptysessions "$pty" "s.get('size')")"

log "stopping the web server the GitOps way: spec.state: Stopped"
web_pid=$(field sandboxprocesses "$web" "s.get('pid')")
kube PATCH "$(path sandboxprocesses "$web")" -H 'Content-Type: application/merge-patch+json' \
    -d '{"spec":{"state":"Stopped"}}' >/dev/null
wait_phase sandboxprocesses "$web" Stopped
if kill -0 "$web_pid" 2>/dev/null; then die "pid $web_pid still runs after the stop"; fi
echo "pid $web_pid is gone"
get sandboxprocesses

log "deleting the PTY session: the finalizer kills the shell first"
shell_pid=$(field ptysessions "$pty" "s.get('pid')")
kube DELETE "$(path ptysessions "$pty")" >/dev/null
for _ in $(seq 100); do kube GET "$(path ptysessions "$pty")" >/dev/null 2>&1 || break; sleep 0.1; done
if kube GET "$(path ptysessions "$pty")" >/dev/null 2>&1; then die "ptysession/$pty was not deleted"; fi
if kill -0 "$shell_pid" 2>/dev/null; then die "shell pid $shell_pid still runs after the delete"; fi
echo "ptysession/$pty deleted; shell pid $shell_pid is gone"
get ptysessions

log "demo done"
