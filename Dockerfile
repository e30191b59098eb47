# syntax=docker/dockerfile:1
# Multi-stage: build with the Rust toolchain, run on a slim Debian as a non-root user.
#   docker build -t whatsapp-gateway .
#   docker run -p 3000:3000 -e API_STATIC_TOKEN=... -v wa-sessions:/app/sessions -v wa-data:/app/data whatsapp-gateway

FROM rust:1.94-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin whatsapp-gateway

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin gateway \
    && mkdir -p /app/sessions /app/data \
    && chown -R gateway:gateway /app \
    && chmod 0700 /app/sessions /app/data
WORKDIR /app
COPY --from=build /src/target/release/whatsapp-gateway /usr/local/bin/whatsapp-gateway
USER gateway
# Credentials (sessions/), the message journal (data/) and the list of sessions live in volumes.
ENV HOST=0.0.0.0 \
    PORT=3000 \
    SESSIONS_DIR=/app/sessions \
    SESSIONS_CONFIG=/app/sessions/sessions.config.json \
    DATA_DIR=/app/data \
    API_TOKEN_FILE=/app/data/.api-token
VOLUME ["/app/sessions", "/app/data"]
EXPOSE 3000
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD curl -fsS http://127.0.0.1:3000/health/live || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/whatsapp-gateway"]
