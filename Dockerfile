# One image for every meshwatch binary: the three services, the shipper, the
# monitor and meshctl. docker-compose.yml runs each container from it.
#
# Stages: chef (toolchain + cargo-chef) -> planner (dependency recipe) ->
# builder (dependencies compiled in their own cached layer, then the
# workspace) -> runtime (slim Debian, binaries only, non-root).

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

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

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates zlib1g \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --create-home --home-dir /var/lib/meshwatch meshwatch \
    && install -d -o meshwatch -g meshwatch /var/lib/meshwatch/shipper
COPY --from=builder \
    /src/target/release/order \
    /src/target/release/inventory \
    /src/target/release/payment \
    /src/target/release/shipper \
    /src/target/release/monitor \
    /src/target/release/meshctl \
    /usr/local/bin/
# Named volumes mounted on /var/lib/meshwatch/shipper inherit this owner.
USER meshwatch
WORKDIR /var/lib/meshwatch
CMD ["meshctl", "--help"]
