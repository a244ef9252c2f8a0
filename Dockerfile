# One image for every meshwatch binary: the three services, the shipper, the
# monitor and meshctl. docker-compose.yml runs each container from it.
#
# Stages: chef (toolchain + cargo-chef) -> planner (dependency recipe) ->
# builder (dependencies compiled in their own cached layer, then the
# workspace) -> runtime (slim Debian, binaries only, non-root). `runtime` is
# the default target; `docker-compose up --build` builds it.
#
# `--target prebuilt` instead copies release binaries built elsewhere (for a
# machine without a registry for the Rust image; tests/compose uses it): the
# build context is a folder holding exactly order, inventory, payment,
# shipper, monitor and meshctl, built for the same Debian release, e.g.
#   docker build -f Dockerfile --target prebuilt -t meshwatch:local DIR
# It stands before the toolchain stages so that the classic builder, which
# builds every stage up to the target, never pulls the Rust image for it.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM debian:${DEBIAN_RELEASE}-slim AS runtime-base
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates zlib1g \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --create-home --home-dir /var/lib/meshwatch meshwatch \
    && install -d -o meshwatch -g meshwatch /var/lib/meshwatch/shipper
# Named volumes mounted on /var/lib/meshwatch/shipper inherit this owner.
WORKDIR /var/lib/meshwatch
CMD ["meshctl", "--help"]

FROM runtime-base AS prebuilt
COPY order inventory payment shipper monitor meshctl /usr/local/bin/
USER meshwatch

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS chef
# librdkafka is built from source by rdkafka-sys (bundled; Debian's is too old).
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake pkg-config python3 zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*
RUN cargo install --locked cargo-chef@0.1.78
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
# Only changes to Cargo.toml/Cargo.lock invalidate this layer.
RUN cargo chef cook --release --locked --workspace --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked --workspace \
        --bin order --bin inventory --bin payment --bin shipper --bin monitor --bin meshctl

FROM runtime-base AS runtime
COPY --from=builder \
    /src/target/release/order \
    /src/target/release/inventory \
    /src/target/release/payment \
    /src/target/release/shipper \
    /src/target/release/monitor \
    /src/target/release/meshctl \
    /usr/local/bin/
USER meshwatch
