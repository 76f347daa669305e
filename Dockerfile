# syntax=docker/dockerfile:1
# Sticky Calls: `docker build -t sticky-calls .`, then see docs/operations.md ("Docker").

FROM rust:1.95-bookworm AS builder
WORKDIR /src
# The whole workspace (every member's manifest is needed), including .cargo/config.toml, which
# sets the flags the bundled SQLite is built with.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p sticky-calls-server --bin sticky-calls \
 && cp target/release/sticky-calls /usr/local/bin/sticky-calls

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
# /data: the SQLite database, its -wal/-shm and its open-calls journal (<db>-starts.N).
# /secrets: the server key file, kept apart from the data (and from its backups).
RUN groupadd --system --gid 10001 sticky \
 && useradd --system --uid 10001 --gid sticky --home-dir /data --no-create-home \
            --shell /usr/sbin/nologin sticky \
 && mkdir -p /data /secrets \
 && chown sticky:sticky /data /secrets \
 && chmod 0700 /data /secrets
COPY --from=builder /usr/local/bin/sticky-calls /usr/local/bin/sticky-calls
ENV STICKY_DATABASE_URL=sqlite:///data/sticky-calls.db \
    STICKY_SECRET_KEY_FILE=/secrets/sticky-calls.secret \
    STICKY_BIND=0.0.0.0:8080
WORKDIR /data
USER sticky
VOLUME ["/data", "/secrets"]
EXPOSE 8080
ENTRYPOINT ["sticky-calls"]
CMD ["serve"]
