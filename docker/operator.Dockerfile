# syntax=docker/dockerfile:1
# The operator image: a static sandbox-operator binary on distroless/static, as uid 65532.
#   docker build -f docker/operator.Dockerfile -t sandbox-operator:0.1.0 .
# Base images are pinned by tag; pin them by digest (image@sha256:...) in your own pipeline.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# Cargo.toml names the benches: the manifest does not load without them.
COPY benches ./benches
# A static binary (glibc's static libc; TLS is rustls, so nothing else to link): it runs on
# distroless/static, which has no libc.
ENV RUSTFLAGS="-C target-feature=+crt-static" \
    CARGO_PROFILE_RELEASE_DEBUG=0 \
    CARGO_PROFILE_RELEASE_STRIP=symbols
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    target="$(uname -m)-unknown-linux-gnu" \
    && cargo build --release --locked --bin sandbox-operator --target "$target" \
    && cp "target/$target/release/sandbox-operator" /sandbox-operator

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /sandbox-operator /usr/local/bin/sandbox-operator
USER 65532:65532
# Probes and metrics: --metrics-addr (the chart passes 0.0.0.0:8080).
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/sandbox-operator"]
CMD ["run", "--metrics-addr=0.0.0.0:8080"]
