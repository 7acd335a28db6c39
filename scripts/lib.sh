# Shared helpers for the repository's scripts. Source it; do not run it.
# shellcheck shell=bash

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

# Runs apt-get update once per script run, then installs the named Debian packages that are
# missing. Needs root (CI and these machines run as root).
apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || die "missing Debian packages ${missing[*]}: install them (apt-get install ${missing[*]}) or run as root"
    log "installing Debian packages: ${missing[*]}"
    if [ -z "${_APT_UPDATED:-}" ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq || die "apt-get update failed"
        _APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
        || die "apt-get install ${missing[*]} failed"
}

# Makes sure the Rust tools the project needs are there.
rust_tools() {
    command -v cargo >/dev/null || die "cargo is not installed: install Rust 1.85+ (https://rustup.rs)"
    cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt >/dev/null 2>&1 || die "rustfmt missing: rustup component add rustfmt"
    cargo clippy --version >/dev/null 2>&1 || rustup component add clippy >/dev/null 2>&1 || die "clippy missing: rustup component add clippy"
    if ! cargo nextest --version >/dev/null 2>&1; then
        log "installing cargo-nextest (crates.io)"
        cargo install --locked cargo-nextest >/dev/null 2>&1 || die "cargo install cargo-nextest failed"
    fi
}

# A Python virtualenv with the given PyPI packages, cached outside the repository.
py_tool_venv() {
    local venv="${SANDBOX_TOOLS_DIR:-$HOME/.cache/sandbox-operator}/venv"
    if [ ! -x "$venv/bin/pip" ]; then
        apt_install python3 python3-venv
        python3 -m venv "$venv" || die "python3 -m venv failed"
    fi
    local need=()
    for pkg in "$@"; do
        "$venv/bin/pip" show "${pkg%%[=<>]*}" >/dev/null 2>&1 || need+=("$pkg")
    done
    if [ ${#need[@]} -gt 0 ]; then
        log "installing PyPI packages: ${need[*]}"
        "$venv/bin/pip" install -q "${need[@]}" || die "pip install ${need[*]} failed"
    fi
    echo "$venv"
}
