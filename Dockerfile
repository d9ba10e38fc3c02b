# syntax=docker/dockerfile:1
#
# One multi-stage build for both services (cargo-chef keeps the dependency
# layer cached while only our code changes):
#
#   docker build --target api-service  -t taskforge/api-service .
#   docker build --target algo-service -t taskforge/algo-service .
#
# docker-compose.yml builds both targets.

# ---- build stages -----------------------------------------------------------
# Debian bookworm like the runtime image, so the binaries find the same glibc.
# Full rust image (not -slim): the native crate compiles C with gcc.
FROM rust:1-bookworm AS chef
RUN cargo install cargo-chef --locked
WORKDIR /app

# The recipe lists the workspace's manifests and lockfile only, so the cook
# layer below is reused until a dependency changes.
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /app/recipe.json recipe.json
RUN cargo chef cook --release --recipe-path recipe.json
COPY . .
RUN cargo build --release --workspace --locked

# ---- runtime stages ---------------------------------------------------------
FROM debian:bookworm-slim AS runtime
# curl: the compose healthchecks; ca-certificates: trust roots for outgoing https.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --user-group --uid 10001 --no-create-home \
        --shell /usr/sbin/nologin taskforge
WORKDIR /app
ENV LOG_FORMAT=json \
    RUST_LOG=info
USER taskforge

FROM runtime AS algo-service
COPY --from=builder /app/target/release/algo-service /usr/local/bin/algo-service
ENV METRICS_BIND=0.0.0.0:9091
EXPOSE 9091
# SIGTERM starts the worker's graceful drain (SHUTDOWN_GRACE_SECS).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/algo-service"]

FROM runtime AS api-service
COPY --from=builder /app/target/release/api-service /usr/local/bin/api-service
ENV API_BIND=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/api-service"]
