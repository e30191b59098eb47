#!/usr/bin/env bash
# Durable intake measured from outside: the release binary, and wrk (Debian's `wrk` package:
# `apt-get install wrk`) as the load generator over real sockets, so the client does not share
# the gateway's runtime. Every 202 means the PDF and its record were fsynced.
#
#   bash bench/intake.sh [connections] [seconds]     # defaults: 32 connections, 15 s
#   BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test bash bench/intake.sh
#       the same on Postgres, in a schema `bench_intake` made empty first (needs psql); the
#       session is created over the API
set -euo pipefail
cd "$(dirname "$0")/.."
connections=${1:-32}
seconds=${2:-15}
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
cargo build --release --quiet --bin whatsapp-gateway

dir=$(mktemp -d "${TMPDIR:-/tmp}/wg-intake-XXXXXX")
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
echo '[{"sessionId":"bench"}]' > "$dir/sessions.config.json"
unset DATABASE_URL
if [ -n "${BENCH_DATABASE_URL:-}" ]; then
  PGOPTIONS="-c client_min_messages=warning" psql "$BENCH_DATABASE_URL" -q \
    -c 'DROP SCHEMA IF EXISTS bench_intake CASCADE' -c 'CREATE SCHEMA bench_intake'
  sep='?'; case "$BENCH_DATABASE_URL" in *\?*) sep='&';; esac
  export DATABASE_URL="${BENCH_DATABASE_URL}${sep}options[search_path]=bench_intake"
fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export TOKEN=bench-token-0123456789abcdef SESSION=bench
# The session is not linked (WhatsApp is a closed port): this measures intake, not sending.
HOST=127.0.0.1 PORT=$port API_STATIC_TOKEN=$TOKEN SESSIONS_DIR="$dir/sessions" \
  SESSIONS_CONFIG="$dir/sessions.config.json" DATA_DIR="$dir/data" API_TOKEN_FILE="$dir/.api-token" \
  WHATSAPP_URL=ws://127.0.0.1:9/ws/chat RATE_LIMIT_PER_SECOND=0 LOG_LEVEL=error \
  QUEUE_MAX_PER_SESSION=1000000 QUEUE_MAX_TOTAL=1000000 \
  QUEUE_MAX_BYTES_PER_SESSION=100000000000 QUEUE_MAX_TOTAL_BYTES=100000000000 \
  target/release/whatsapp-gateway >"$dir/gateway.log" 2>&1 &
pid=$!
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$port/health/ready" >/dev/null 2>&1 && break
  sleep 0.1
done
if [ -n "${DATABASE_URL:-}" ]; then
  # On Postgres the registry is a table: the session is created as a client would.
  curl -fs -o /dev/null -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    -d '{"sessionId":"bench"}' "http://127.0.0.1:$port/api/sessions"
fi
wrk -t2 -c"$connections" -d"${seconds}s" --latency -s bench/send_pdf.lua "http://127.0.0.1:$port/api/send-pdf"
