#!/usr/bin/env bash
# Local CRD-serving Kubernetes control plane for tests, CI and the demo:
# etcd (Debian bookworm's etcd-server) + the real k8s.io/apiextensions-apiserver,
# built once from Debian sid's Go source packages with a private apt state and
# cached outside the repository. See scripts/README.md.
#
# Usage: scripts/control-plane.sh start|stop|env|status
set -Eeuo pipefail

PROG=control-plane
STATE_DIR=${SANDBOX_CP_DIR:-/tmp/sandbox-cp}
CACHE_DIR=${SANDBOX_CP_CACHE:-${HOME:-/root}/.cache/sandbox-operator}
TIMEOUT=${SANDBOX_CP_TIMEOUT:-180}
GO_PACKAGE=${SANDBOX_CP_GO_PACKAGE:-golang-1.26-go}
SRC_PACKAGE=golang-k8s-apiextensions-apiserver-dev
APISERVER_BIN=${SANDBOX_CP_APISERVER_BIN:-$CACHE_DIR/bin/apiextensions-apiserver}
ETCD_BIN=${SANDBOX_CP_ETCD_BIN:-}
export DEBIAN_FRONTEND=noninteractive

STEP="init"
STARTED_PIDS=()   # processes started by this invocation; stopped again if start fails
APT_UPDATED=0
LOGS_FRESH=0      # the logs in the state dir are from this start (worth printing on failure)

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }

show_logs() {
  local f
  [[ $LOGS_FRESH == 1 ]] || return 0
  for f in "$STATE_DIR/etcd.log" "$STATE_DIR/apiserver.log"; do
    if [[ -s $f ]]; then
      printf '%s: ---- last 30 lines of %s ----\n' "$PROG" "$f" >&2
      tail -n 30 "$f" >&2 || true
    fi
  done
}

# Undo a half-done start so a failed start never leaves stray processes behind.
cleanup_started() {
  local pid
  ((${#STARTED_PIDS[@]})) || return 0
  log "stopping the processes this start launched: ${STARTED_PIDS[*]}"
  for pid in "${STARTED_PIDS[@]}"; do
    kill_pid "$pid" || true
  done
  STARTED_PIDS=()
  rm -f "$STATE_DIR/etcd.pid" "$STATE_DIR/apiserver.pid"
}

die() {
  trap - ERR
  printf '%s: FAILED at step "%s": %s\n' "$PROG" "$STEP" "$*" >&2
  show_logs
  cleanup_started
  exit 1
}

on_err() {
  local rc=$? line=$1 cmd=$2
  trap - ERR
  printf '%s: FAILED at step "%s": command exited %s (line %s): %s\n' \
    "$PROG" "$STEP" "$rc" "$line" "$cmd" >&2
  show_logs
  cleanup_started
  exit "$rc"
}
trap 'on_err $LINENO "$BASH_COMMAND"' ERR

step() { STEP=$1; log "$1"; }

# ---------------------------------------------------------------- helpers

pid_alive() { [[ -n ${1:-} ]] && kill -0 "$1" 2>/dev/null; }

read_pid() { [[ -f $1 ]] && tr -dc '0-9' <"$1" || true; }

# Only signal a pid if it is still the process we started (pid files go stale).
pid_is() {
  local pid=$1 name=$2 argv0
  pid_alive "$pid" || return 1
  argv0=$(head -z -n 1 "/proc/$pid/cmdline" 2>/dev/null | tr -d '\0') || return 1
  [[ ${argv0##*/} == *"$name"* ]]
}

kill_pid() {
  local pid=$1 i
  pid_alive "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 150; i++)); do
    pid_alive "$pid" || return 0
    sleep 0.1
  done
  log "pid $pid did not exit after SIGTERM; sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    pid_alive "$pid" || return 0
    sleep 0.1
  done
  return 1
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# pick_port VAR CONFIGURED BASE NAME [TAKEN...]: the configured port (must be
# free) or the first free one from BASE, not in TAKEN. Sets VAR (no subshell, so
# die() reports once).
pick_port() {
  local var=$1 configured=$2 base=$3 name=$4 p
  shift 4
  local taken=" $* "
  if [[ -n $configured ]]; then
    ! port_in_use "$configured" || die "$name port $configured (from the environment) is already in use"
    printf -v "$var" '%s' "$configured"
    return
  fi
  for ((p = base; p < base + 200; p++)); do
    [[ $taken == *" $p "* ]] && continue
    if ! port_in_use "$p"; then
      printf -v "$var" '%s' "$p"
      return
    fi
  done
  die "no free $name port in $base..$((base + 199))"
}

need_root() {
  [[ $(id -u) -eq 0 ]] || die "$1 needs root (apt-get install); install it yourself or run as root"
}

apt_install() {
  need_root "installing $*"
  if [[ $APT_UPDATED -eq 0 ]] && ! apt-cache show "$@" >/dev/null 2>&1; then
    log "apt-get update (package lists are missing or stale)"
    apt-get update -qq >&2 || die "apt-get update failed"
    APT_UPDATED=1
  fi
  apt-get install -y -qq --no-install-recommends "$@" </dev/null >&2 ||
    die "apt-get install $* failed"
}

ensure_host_tools() {
  step "check host tools (openssl, curl, etcd)"
  local missing=()
  command -v openssl >/dev/null || missing+=(openssl)
  command -v curl >/dev/null || missing+=(curl)
  command -v flock >/dev/null || missing+=(util-linux)
  if [[ -z $ETCD_BIN ]]; then
    if [[ -x /usr/bin/etcd ]]; then
      ETCD_BIN=/usr/bin/etcd
    else
      missing+=(etcd-server)
    fi
  fi
  if ((${#missing[@]})); then
    step "install Debian packages: ${missing[*]}"
    apt_install "${missing[@]}"
  fi
  [[ -n $ETCD_BIN ]] || ETCD_BIN=/usr/bin/etcd
  [[ -x $ETCD_BIN ]] || die "etcd binary $ETCD_BIN not found after installing etcd-server"
}

# ------------------------------------------- build apiextensions-apiserver

# The Debian mirror this machine already uses (deb822 .sources or one-line .list).
detect_mirror() {
  if [[ -n ${SANDBOX_CP_DEBIAN_MIRROR:-} ]]; then
    echo "$SANDBOX_CP_DEBIAN_MIRROR"
    return
  fi
  local url
  url=$(
    {
      cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
        awk '$1 == "deb" { sub(/\[[^]]*\] */, ""); for (i = 3; i <= NF; i++) if ($i == "bookworm") { print $2; exit } }'
      for f in /etc/apt/sources.list.d/*.sources; do
        [[ -f $f ]] || continue
        awk 'BEGIN { RS = ""; FS = "\n" }
             { uris = ""; suites = ""
               for (i = 1; i <= NF; i++) {
                 if ($i ~ /^URIs:/) { uris = $i; sub(/^URIs: */, "", uris) }
                 if ($i ~ /^Suites:/) { suites = " " $i " "; sub(/^ Suites:/, "", suites) }
               }
               if (suites ~ / bookworm /) { split(uris, u, " "); print u[1]; exit } }' "$f"
      done
    } | head -n 1
  ) || true
  # A snapshot pinned at an old date has no current sid; use the main archive then.
  if [[ -z $url || $url == *snapshot.debian.org* ]]; then
    url=http://deb.debian.org/debian
  fi
  echo "${url%/}"
}

build_apiserver() {
  local lock_fd apt work root mirror keyring go_pkg go_minor src_ver go_ver
  mkdir -p "$CACHE_DIR/bin"
  exec {lock_fd}>"$CACHE_DIR/.build.lock"
  step "wait for the build lock $CACHE_DIR/.build.lock"
  flock -w 1800 "$lock_fd" || die "another build holds $CACHE_DIR/.build.lock"
  if [[ -x $APISERVER_BIN && ${SANDBOX_CP_REBUILD:-0} != 1 ]]; then
    exec {lock_fd}>&-
    return 0 # someone else built it while we waited
  fi

  step "set up a private apt state for Debian sid (system apt config is not touched)"
  command -v dpkg-deb >/dev/null || die "dpkg-deb not found (this needs a Debian system)"
  keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  [[ -f $keyring ]] || { apt_install debian-archive-keyring; }
  mirror=$(detect_mirror)
  apt=$CACHE_DIR/apt-sid
  mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/sources.list.d" \
    "$apt/preferences.d" "$apt/state"
  echo "deb [signed-by=$keyring] $mirror sid main" >"$apt/sources.list"
  local -a A=(
    -o "Dir::State=$apt/state"
    -o "Dir::State::Lists=$apt/lists"
    -o "Dir::State::status=/dev/null"
    -o "Dir::Etc::SourceList=$apt/sources.list"
    -o "Dir::Etc::SourceParts=$apt/sources.list.d"
    -o "Dir::Etc::Preferences=$apt/preferences"
    -o "Dir::Etc::PreferencesParts=$apt/preferences.d"
    -o "Dir::Cache=$apt/cache"
    -o "Acquire::Languages=none"
    -o "APT::Install-Recommends=false"
  )
  [[ $(id -u) -eq 0 ]] && A+=(-o "APT::Sandbox::User=root")

  step "apt-get update of the private sid lists from $mirror"
  apt-get "${A[@]}" update -qq >&2 || die "apt-get update of the private sid state failed (mirror $mirror)"

  step "choose the Go toolchain package"
  go_pkg=$GO_PACKAGE
  if ! apt-cache "${A[@]}" show "$go_pkg" >/dev/null 2>&1; then
    go_pkg=$(apt-cache "${A[@]}" pkgnames golang-1. | grep -E '^golang-1\.[0-9]+-go$' | sort -V | tail -n 1) || true
    [[ -n $go_pkg ]] || die "no golang-1.x-go package in sid"
    log "$GO_PACKAGE is not in sid; using $go_pkg"
  fi
  go_minor=${go_pkg#golang-}
  go_minor=${go_minor%-go}
  go_ver=$(apt-cache "${A[@]}" show "$go_pkg" | awk '/^Version:/ { print $2; exit }')
  src_ver=$(apt-cache "${A[@]}" show "$SRC_PACKAGE" | awk '/^Version:/ { print $2; exit }') ||
    die "$SRC_PACKAGE not found in sid"
  [[ -n $src_ver ]] || die "$SRC_PACKAGE not found in sid"
  log "building $SRC_PACKAGE $src_ver with $go_pkg $go_ver"

  step "resolve the golang-* dependency closure of $SRC_PACKAGE (apt-get --simulate)"
  local -a pkgs
  mapfile -t pkgs < <(
    apt-get "${A[@]}" -s install "$SRC_PACKAGE" "$go_pkg" |
      awk '/^Inst / { print $2 }' |
      grep -E '^golang-' |
      # other toolchains and the golang-go metapackage are pulled in by some
      # -dev packages but are not needed: we build with $go_pkg only.
      grep -vE '^golang-(go|src|doc)$' |
      grep -vE "^golang-1\.[0-9]+-(go|src|doc)$" || true
  )
  ((${#pkgs[@]} > 10)) || die "dependency resolution returned only ${#pkgs[@]} packages"
  pkgs+=("$go_pkg" "golang-$go_minor-src")

  work=$CACHE_DIR/build.$$
  rm -rf "$work"
  mkdir -p "$work/debs" "$work/root"
  step "apt-get download ${#pkgs[@]} packages into $work/debs"
  (cd "$work/debs" && apt-get "${A[@]}" download -qq "${pkgs[@]}" >&2) ||
    die "apt-get download failed"

  step "unpack the packages with dpkg-deb -x into $work/root"
  local deb
  for deb in "$work"/debs/*.deb; do
    dpkg-deb -x "$deb" "$work/root" || die "dpkg-deb -x $deb failed"
  done
  rm -rf "$work/debs"
  root=$work/root
  # Absolute symlinks inside the packages would point at the host's /usr.
  local link target
  while IFS= read -r -d '' link; do
    target=$(readlink "$link")
    ln -sfn "$root$target" "$link"
  done < <(find "$root" -type l -lname '/*' -print0)

  step "go build k8s.io/apiextensions-apiserver (GOPATH mode; takes ~4 minutes on 2 cores)"
  local goroot=$root/usr/lib/go-$go_minor
  [[ -x $goroot/bin/go ]] || die "no go binary at $goroot/bin/go"
  [[ -d $root/usr/share/gocode/src/k8s.io/apiextensions-apiserver ]] ||
    die "k8s.io/apiextensions-apiserver source missing from $root/usr/share/gocode"
  local kver=${src_ver%%-*} # 0.36.4 -> Kubernetes v1.36.4
  kver=${kver%%+*}
  local kminor=${kver#0.}
  kminor=${kminor%%.*}
  local vpkg=k8s.io/component-base/version
  local ldflags="-s -w -X $vpkg.gitVersion=v1.${kver#0.} -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=$kminor"
  ldflags+=" -X $vpkg.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ) -X $vpkg.gitTreeState=clean"
  local start_s=$SECONDS
  (
    cd "$work"
    env -u GOFLAGS GOROOT="$goroot" GOPATH="$root/usr/share/gocode" GO111MODULE=off \
      GOPROXY=off GOTOOLCHAIN=local GOWORK=off GOENV=off CGO_ENABLED=0 \
      GOCACHE="$work/gocache" GOTMPDIR= PATH="$goroot/bin:$PATH" \
      go build -trimpath -ldflags "$ldflags" -o "$work/apiextensions-apiserver" \
      k8s.io/apiextensions-apiserver
  ) >"$work/build.log" 2>&1 || {
    tail -n 40 "$work/build.log" >&2
    die "go build failed (full log: $work/build.log)"
  }
  log "go build took $((SECONDS - start_s))s"

  step "cache the binary at $APISERVER_BIN"
  mkdir -p "$(dirname "$APISERVER_BIN")"
  mv -f "$work/apiextensions-apiserver" "$APISERVER_BIN.tmp"
  mv -f "$APISERVER_BIN.tmp" "$APISERVER_BIN"
  {
    echo "$SRC_PACKAGE $src_ver"
    echo "$go_pkg $go_ver"
    echo "mirror $mirror sid"
    echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  } >"$APISERVER_BIN.version"
  rm -rf "$work"
  exec {lock_fd}>&-
}

ensure_apiserver() {
  step "find the apiextensions-apiserver binary"
  if [[ -x $APISERVER_BIN && ${SANDBOX_CP_REBUILD:-0} != 1 ]]; then
    log "using cached $APISERVER_BIN ($(head -n 1 "$APISERVER_BIN.version" 2>/dev/null || echo 'unknown version'))"
    return
  fi
  [[ -z ${SANDBOX_CP_APISERVER_BIN:-} || ${SANDBOX_CP_REBUILD:-0} == 1 ]] ||
    die "SANDBOX_CP_APISERVER_BIN=$SANDBOX_CP_APISERVER_BIN is not an executable"
  log "no cached binary: building it from Debian sid packages (first time only)"
  build_apiserver
  [[ -x $APISERVER_BIN ]] || die "build finished but $APISERVER_BIN is missing"
}

# ------------------------------------------------------------ certificates

gen_certs() {
  step "generate certificates in $STATE_DIR/pki"
  local pki=$STATE_DIR/pki
  if [[ -f $pki/ca.crt && -f $pki/server.crt && -f $pki/admin.crt ]] &&
    openssl x509 -checkend 86400 -noout -in "$pki/server.crt" >/dev/null &&
    openssl x509 -checkend 86400 -noout -in "$pki/admin.crt" >/dev/null; then
    log "reusing existing certificates"
    return
  fi
  rm -rf "$pki"
  mkdir -p "$pki"
  chmod 700 "$pki"
  local ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
  openssl req -x509 "${ec[@]}" -keyout "$pki/ca.key" -out "$pki/ca.crt" -days 3650 \
    -subj "/CN=sandbox-cp-ca" 2>"$pki/openssl.log" ||
    die "openssl: CA generation failed ($(cat "$pki/openssl.log"))"
  printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "extendedKeyUsage=serverAuth" \
    "keyUsage=critical,digitalSignature,keyEncipherment" "basicConstraints=critical,CA:FALSE" \
    >"$pki/server.ext"
  printf '%s\n' "extendedKeyUsage=clientAuth" \
    "keyUsage=critical,digitalSignature,keyEncipherment" "basicConstraints=critical,CA:FALSE" \
    >"$pki/client.ext"
  local name subj ext
  for name in server admin; do
    if [[ $name == server ]]; then
      subj=/CN=sandbox-cp-apiserver ext=server.ext
    else
      subj="/O=system:masters/CN=admin" ext=client.ext
    fi
    openssl req "${ec[@]}" -keyout "$pki/$name.key" -out "$pki/$name.csr" -subj "$subj" \
      2>>"$pki/openssl.log" || die "openssl: $name key/CSR failed ($(cat "$pki/openssl.log"))"
    openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
      -CAcreateserial -days 3650 -out "$pki/$name.crt" -extfile "$pki/$ext" \
      2>>"$pki/openssl.log" || die "openssl: signing $name certificate failed ($(cat "$pki/openssl.log"))"
  done
  chmod 600 "$pki"/*.key
}

write_kubeconfig() {
  local pki=$STATE_DIR/pki
  cat >"$STATE_DIR/kubeconfig.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: sandbox-cp
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority: $pki/ca.crt
users:
- name: admin
  user:
    client-certificate: $pki/admin.crt
    client-key: $pki/admin.key
contexts:
- name: sandbox-cp
  context:
    cluster: sandbox-cp
    user: admin
    namespace: default
current-context: sandbox-cp
EOF
  mv -f "$STATE_DIR/kubeconfig.tmp" "$STATE_DIR/kubeconfig"
}

# -------------------------------------------------------------- API access

# api METHOD PATH [BODY_FILE [CONTENT_TYPE]] -> sets HTTP_CODE, body in $STATE_DIR/last-response
api() {
  local method=$1 path=$2 body=${3:-} ctype=${4:-application/json} pki=$STATE_DIR/pki
  local -a args=(-sS -o "$STATE_DIR/last-response" -w '%{http_code}' --max-time 10 -A sandbox-cp
    --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" -X "$method")
  [[ -n $body ]] && args+=(-H "Content-Type: $ctype" --data-binary "@$body")
  HTTP_CODE=$(curl "${args[@]}" "https://127.0.0.1:$API_PORT$path" 2>/dev/null) || HTTP_CODE=000
}

# Does the last response contain STRING once whitespace is removed? (the API
# server pretty-prints JSON for some user agents)
resp_has() { tr -d ' \t\r\n' <"$STATE_DIR/last-response" | grep -qF -- "$1"; }

load_ports() {
  [[ -f $STATE_DIR/ports.env ]] || return 1
  # shellcheck disable=SC1091
  source "$STATE_DIR/ports.env"
  [[ -n ${API_PORT:-} && -n ${ETCD_PORT:-} ]]
}

is_up() {
  load_ports || return 1
  pid_is "$(read_pid "$STATE_DIR/etcd.pid")" etcd || return 1
  pid_is "$(read_pid "$STATE_DIR/apiserver.pid")" apiextensions-apiserver || return 1
  api GET /apis/apiextensions.k8s.io/v1
  [[ $HTTP_CODE == 200 ]]
}

deadline_passed() { ((SECONDS >= $1)); }

wait_crd_serving() {
  local deadline=$1 group=probe.sandbox-cp.test
  local crd=probes.$group tmp=$STATE_DIR/probe
  mkdir -p "$tmp"

  step "wait for /apis/apiextensions.k8s.io/v1 (its /readyz never turns ready without a kube-apiserver)"
  until api GET /apis/apiextensions.k8s.io/v1 && [[ $HTTP_CODE == 200 ]]; do
    pid_alive "$APISERVER_PID" || die "apiextensions-apiserver exited"
    deadline_passed "$deadline" && die "timed out after ${TIMEOUT}s waiting for /apis/apiextensions.k8s.io/v1 (last HTTP $HTTP_CODE)"
    sleep 0.5
  done

  step "create the throwaway CRD $crd"
  cat >"$tmp/crd.json" <<EOF
{"apiVersion":"apiextensions.k8s.io/v1","kind":"CustomResourceDefinition",
 "metadata":{"name":"$crd"},
 "spec":{"group":"$group","scope":"Namespaced",
  "names":{"plural":"probes","singular":"probe","kind":"Probe","listKind":"ProbeList"},
  "versions":[{"name":"v1","served":true,"storage":true,
   "schema":{"openAPIV3Schema":{"type":"object","properties":{"spec":{"type":"object","properties":{"n":{"type":"integer"}}}}}}}]}}
EOF
  api DELETE "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/$crd" # leftover from a crash
  until api POST /apis/apiextensions.k8s.io/v1/customresourcedefinitions "$tmp/crd.json" &&
    [[ $HTTP_CODE == 201 || $HTTP_CODE == 409 ]]; do
    deadline_passed "$deadline" && die "timed out creating the probe CRD (HTTP $HTTP_CODE: $(head -c 400 "$STATE_DIR/last-response"))"
    sleep 0.5
  done

  step "wait until the probe CRD is Established"
  until api GET "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/$crd" && [[ $HTTP_CODE == 200 ]] &&
    resp_has '"type":"Established","status":"True"'; do
    deadline_passed "$deadline" && die "timed out waiting for the probe CRD to become Established (HTTP $HTTP_CODE)"
    sleep 0.5
  done

  step "create and list a probe custom object"
  echo '{"apiVersion":"'"$group"'/v1","kind":"Probe","metadata":{"name":"probe"},"spec":{"n":1}}' >"$tmp/obj.json"
  until api POST "/apis/$group/v1/namespaces/default/probes" "$tmp/obj.json" &&
    [[ $HTTP_CODE == 201 || $HTTP_CODE == 409 ]]; do
    deadline_passed "$deadline" && die "timed out creating a custom object (HTTP $HTTP_CODE: $(head -c 400 "$STATE_DIR/last-response"))"
    sleep 0.5
  done
  api GET "/apis/$group/v1/namespaces/default/probes"
  if [[ $HTTP_CODE != 200 ]] || ! resp_has '"name":"probe"'; then
    die "listing custom objects failed (HTTP $HTTP_CODE: $(head -c 400 "$STATE_DIR/last-response"))"
  fi

  step "delete the probe object and CRD"
  api DELETE "/apis/$group/v1/namespaces/default/probes/probe"
  [[ $HTTP_CODE == 200 || $HTTP_CODE == 202 ]] || die "deleting the probe object failed (HTTP $HTTP_CODE)"
  api DELETE "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/$crd"
  [[ $HTTP_CODE == 200 || $HTTP_CODE == 202 ]] || die "deleting the probe CRD failed (HTTP $HTTP_CODE)"
  until api GET "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/$crd" && [[ $HTTP_CODE == 404 ]]; do
    deadline_passed "$deadline" && die "timed out waiting for the probe CRD to be deleted (HTTP $HTTP_CODE)"
    sleep 0.5
  done
  rm -rf "$tmp"
}

# ---------------------------------------------------------------- commands

stop_processes() {
  local name pid
  for name in apiserver etcd; do
    pid=$(read_pid "$STATE_DIR/$name.pid")
    if [[ -n $pid ]] && pid_is "$pid" "$([[ $name == etcd ]] && echo etcd || echo apiextensions-apiserver)"; then
      log "stopping $name (pid $pid)"
      kill_pid "$pid" || die "could not stop $name (pid $pid)"
    fi
    rm -f "$STATE_DIR/$name.pid"
  done
}

cmd_start() {
  mkdir -p "$STATE_DIR"
  exec {LOCK_FD}>"$STATE_DIR/.lock"
  step "take the state lock $STATE_DIR/.lock"
  flock -w 2400 "$LOCK_FD" || die "another start/stop holds $STATE_DIR/.lock"

  if is_up; then
    log "already running: https://127.0.0.1:$API_PORT (KUBECONFIG=$STATE_DIR/kubeconfig)"
    return 0
  fi
  local begin=$SECONDS
  step "clean up a previous, partly running control plane"
  stop_processes

  ensure_host_tools
  ensure_apiserver
  gen_certs

  step "pick ports"
  pick_port ETCD_PORT "${SANDBOX_CP_ETCD_PORT:-}" 12379 etcd-client
  pick_port ETCD_PEER_PORT "${SANDBOX_CP_ETCD_PEER_PORT:-}" 12380 etcd-peer "$ETCD_PORT"
  pick_port API_PORT "${SANDBOX_CP_API_PORT:-}" 16443 apiserver "$ETCD_PORT" "$ETCD_PEER_PORT"
  printf 'API_PORT=%s\nETCD_PORT=%s\nETCD_PEER_PORT=%s\n' "$API_PORT" "$ETCD_PORT" "$ETCD_PEER_PORT" \
    >"$STATE_DIR/ports.env"
  write_kubeconfig

  step "start etcd on 127.0.0.1:$ETCD_PORT (data in $STATE_DIR/etcd-data)"
  if [[ ${SANDBOX_CP_KEEP_DATA:-0} != 1 ]]; then
    rm -rf "$STATE_DIR/etcd-data"
  fi
  mkdir -p "$STATE_DIR/etcd-data"
  chmod 700 "$STATE_DIR/etcd-data"
  : >"$STATE_DIR/etcd.log"
  : >"$STATE_DIR/apiserver.log"
  LOGS_FRESH=1
  setsid "$ETCD_BIN" --name sandbox-cp --data-dir "$STATE_DIR/etcd-data" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "sandbox-cp=http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster-state new --logger zap --log-outputs stderr \
    </dev/null >>"$STATE_DIR/etcd.log" 2>&1 {LOCK_FD}>&- &
  local etcd_pid=$!
  STARTED_PIDS+=("$etcd_pid")
  echo "$etcd_pid" >"$STATE_DIR/etcd.pid"
  local deadline=$((SECONDS + TIMEOUT))
  step "wait for etcd health"
  until curl -fsS --max-time 2 "http://127.0.0.1:$ETCD_PORT/health" 2>/dev/null | grep -q '"health":"true"'; do
    pid_alive "$etcd_pid" || die "etcd exited"
    deadline_passed "$deadline" && die "timed out after ${TIMEOUT}s waiting for etcd /health"
    sleep 0.2
  done

  step "start apiextensions-apiserver on 127.0.0.1:$API_PORT"
  local pki=$STATE_DIR/pki
  local -a extra_args=()
  read -r -a extra_args <<<"${SANDBOX_CP_APISERVER_ARGS:-}"
  # Without a kube-apiserver: client-cert authn only, system:masters is always
  # authorized (the delegating authorizer short-circuits it), the kubeconfig
  # flags point at itself only so the delegating options do not demand
  # in-cluster config, and admission plugins / APF that need core APIs are off.
  setsid "$APISERVER_BIN" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 127.0.0.1 --secure-port "$API_PORT" \
    --tls-cert-file "$pki/server.crt" --tls-private-key-file "$pki/server.key" \
    --client-ca-file "$pki/ca.crt" \
    --cert-dir "$STATE_DIR/apiserver-certs" \
    --kubeconfig "$STATE_DIR/kubeconfig" \
    --authentication-kubeconfig "$STATE_DIR/kubeconfig" \
    --authorization-kubeconfig "$STATE_DIR/kubeconfig" \
    --authentication-skip-lookup \
    --disable-admission-plugins NamespaceLifecycle,MutatingAdmissionPolicy,MutatingAdmissionWebhook,ValidatingAdmissionPolicy,ValidatingAdmissionWebhook \
    --enable-priority-and-fairness=false \
    "${extra_args[@]}" \
    </dev/null >>"$STATE_DIR/apiserver.log" 2>&1 {LOCK_FD}>&- &
  APISERVER_PID=$!
  STARTED_PIDS+=("$APISERVER_PID")
  echo "$APISERVER_PID" >"$STATE_DIR/apiserver.pid"

  wait_crd_serving "$deadline"

  STARTED_PIDS=()
  STEP="done"
  log "up in $((SECONDS - begin))s: https://127.0.0.1:$API_PORT, etcd 127.0.0.1:$ETCD_PORT"
  log "run: eval \"\$(scripts/control-plane.sh env)\""
}

cmd_stop() {
  mkdir -p "$STATE_DIR"
  local lock_fd
  exec {lock_fd}>"$STATE_DIR/.lock"
  step "take the state lock $STATE_DIR/.lock"
  flock -w 600 "$lock_fd" || die "another start/stop holds $STATE_DIR/.lock"
  step "stop the control plane"
  stop_processes
  log "stopped (cache kept in $CACHE_DIR)"
}

cmd_env() {
  STEP="env"
  load_ports && [[ -f $STATE_DIR/kubeconfig ]] ||
    die "no control plane state in $STATE_DIR: run '$0 start' first"
  printf 'export KUBECONFIG=%q\n' "$STATE_DIR/kubeconfig"
  printf 'export SANDBOX_CP_SERVER=%q\n' "https://127.0.0.1:$API_PORT"
  printf 'export SANDBOX_CP_CA=%q\n' "$STATE_DIR/pki/ca.crt"
  printf 'export SANDBOX_CP_CLIENT_CERT=%q\n' "$STATE_DIR/pki/admin.crt"
  printf 'export SANDBOX_CP_CLIENT_KEY=%q\n' "$STATE_DIR/pki/admin.key"
}

cmd_status() {
  STEP="status"
  if is_up; then
    log "up: https://127.0.0.1:$API_PORT (etcd pid $(read_pid "$STATE_DIR/etcd.pid"), apiserver pid $(read_pid "$STATE_DIR/apiserver.pid"))"
    exit 0
  fi
  log "down (state dir $STATE_DIR)"
  exit 1
}

case ${1:-} in
start) cmd_start ;;
stop) cmd_stop ;;
env) cmd_env ;;
status) cmd_status ;;
*)
  echo "usage: $0 start|stop|env|status" >&2
  exit 2
  ;;
esac
