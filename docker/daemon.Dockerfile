# syntax=docker/dockerfile:1
# sandbox-daemon images. The daemon is built statically, so it runs in any sandbox image, glibc,
# musl or none, which is what the init-container pattern needs (examples/sandbox-pod.yaml):
#   docker build -f docker/daemon.Dockerfile -t sandbox-daemon-installer:0.1.0 .
#     (default target `installer`: the binary plus busybox's cp, for the init container that
#     copies /usr/local/bin/sandbox-daemon into a shared emptyDir)
#   docker build -f docker/daemon.Dockerfile --target daemon -t sandbox-daemon:0.1.0 .
#     (the daemon alone, as the entrypoint of its own container)
# Base images are pinned by tag; pin them by digest (image@sha256:...) in your own pipeline.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# Cargo.toml names the benches: the manifest does not load without them.
COPY benches ./benches
# The same build as scripts/build-static-daemon.sh (glibc's static libc, no dynamic loader),
# without debug info and symbols for a small image.
ENV RUSTFLAGS="-C target-feature=+crt-static" \
    CARGO_PROFILE_RELEASE_DEBUG=0 \
    CARGO_PROFILE_RELEASE_STRIP=symbols
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    target="$(uname -m)-unknown-linux-gnu" \
    && cargo build --release --locked --bin sandbox-daemon --target "$target" \
    && cp "target/$target/release/sandbox-daemon" /sandbox-daemon

# The daemon as the entrypoint of its own container (it needs a token: --token-file or
# SANDBOX_DAEMON_TOKEN_FILE, mounted from a Secret).
FROM gcr.io/distroless/static-debian12:nonroot AS daemon
COPY --from=build /sandbox-daemon /usr/local/bin/sandbox-daemon
USER 65532:65532
EXPOSE 9501
ENTRYPOINT ["/usr/local/bin/sandbox-daemon"]

# The installer for the init-container pattern: distroless's debug variant adds busybox
# (/busybox/cp), nothing else.
FROM gcr.io/distroless/static-debian12:debug-nonroot AS installer
COPY --from=build /sandbox-daemon /usr/local/bin/sandbox-daemon
USER 65532:65532
ENTRYPOINT ["/busybox/cp", "/usr/local/bin/sandbox-daemon"]
CMD ["/opt/sandbox/bin/sandbox-daemon"]
